package dashboard

import (
	"slices"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// A chart is a stacked bar chart of one quantity per day and model, drawn
// as SVG by the usage template: no script, no library.
type chart struct {
	Width, Height int
	Bars          []bar
	Legend        []legendItem
	// Top labels the scale's maximum; Ticks the days under the axis.
	Top   string
	Ticks []tick
	Empty bool
}

type bar struct {
	X, W     int
	Segments []segment
}

type segment struct {
	Y, H  int
	Fill  string
	Title string
}

type legendItem struct {
	Model string
	Fill  string
}

type tick struct {
	X    int
	Text string
}

// palette colours the models, most used first.
var palette = []string{"#4f6bed", "#e8833a", "#2ea37d", "#c94f7c", "#8a63d2", "#d4b82b", "#3fa7c9", "#8c8c8c"}

// Chart geometry, in SVG units.
const (
	chartWidth  = 720
	chartHeight = 180
	chartLeft   = 4
	chartTop    = 8
	chartBottom = 20 // room for the day labels
)

// charts draws tokens and cost per day and model over the days from since.
func charts(rows []billing.DailyUsageRow, since time.Time, days int) (tokens, cost chart) {
	// Models by total tokens, most first: the same colour in both charts.
	totals := map[string]int64{}
	for _, r := range rows {
		totals[r.Model] += r.PromptTokens + r.CompletionTokens
	}
	models := make([]string, 0, len(totals))
	for m := range totals {
		models = append(models, m)
	}
	slices.SortFunc(models, func(a, b string) int {
		if totals[a] != totals[b] {
			return int(min(max(totals[b]-totals[a], -1), 1))
		}
		if a < b {
			return -1
		}
		return 1
	})
	fill := map[string]string{}
	var legend []legendItem
	for i, m := range models {
		fill[m] = palette[min(i, len(palette)-1)]
		legend = append(legend, legendItem{Model: m, Fill: fill[m]})
	}
	tokens = draw(rows, since, days, fill, legend, func(r billing.DailyUsageRow) int64 { return r.PromptTokens + r.CompletionTokens },
		func(v int64) string { return formatCount(v) + " tokens" })
	cost = draw(rows, since, days, fill, legend, func(r billing.DailyUsageRow) int64 { return int64(r.Cost) },
		func(v int64) string { return usd(billing.Amount(v)) })
	return tokens, cost
}

func draw(rows []billing.DailyUsageRow, since time.Time, days int, fill map[string]string, legend []legendItem,
	value func(billing.DailyUsageRow) int64, label func(int64) string) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Legend: legend}
	perDay := make([][]billing.DailyUsageRow, days)
	dayTotal := make([]int64, days)
	var top int64
	for _, r := range rows {
		i := int(r.Day.Sub(since) / (24 * time.Hour))
		if i < 0 || i >= days || value(r) <= 0 {
			continue
		}
		perDay[i] = append(perDay[i], r)
		dayTotal[i] += value(r)
		top = max(top, dayTotal[i])
	}
	if top == 0 {
		c.Empty = true
		return c
	}
	c.Top = label(top)
	slot := (chartWidth - chartLeft) / days
	plot := chartHeight - chartTop - chartBottom
	for i := range days {
		day := since.AddDate(0, 0, i)
		x := chartLeft + i*slot
		if (days-1-i)%7 == 0 { // a week apart, ending today
			c.Ticks = append(c.Ticks, tick{X: x + slot/2, Text: day.Format("Jan 2")})
		}
		if dayTotal[i] == 0 {
			continue
		}
		b := bar{X: x + 1, W: slot - 2}
		// Stack in legend order, first at the bottom.
		slices.SortFunc(perDay[i], func(a, b billing.DailyUsageRow) int {
			return slices.IndexFunc(legend, func(l legendItem) bool { return l.Model == a.Model }) -
				slices.IndexFunc(legend, func(l legendItem) bool { return l.Model == b.Model })
		})
		var below int64
		for _, r := range perDay[i] {
			y0 := chartTop + plot - int(below*int64(plot)/top)
			below += value(r)
			y1 := chartTop + plot - int(below*int64(plot)/top)
			h := max(y0-y1, 1)
			b.Segments = append(b.Segments, segment{Y: y0 - h, H: h, Fill: fill[r.Model],
				Title: day.Format("Jan 2") + " · " + r.Model + ": " + label(value(r)) + ", " + plural(r.Requests, "request")})
		}
		c.Bars = append(c.Bars, b)
	}
	return c
}

// plural writes "1 request", "2 requests".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return formatCount(n) + " " + noun + "s"
}
