package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream"
)

// upstreamsView is what GET /arcane/upstreams answers: every model's
// deployments with their health, as this process has seen them.
type upstreamsView struct {
	Data []modelUpstreams `json:"data"`
}

type modelUpstreams struct {
	Model       string           `json:"model"`
	Deployments []deploymentView `json:"deployments"`
}

// deploymentView is one deployment's health. It names the provider and the
// provider's model id, never a key.
type deploymentView struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
	Weight   int    `json:"weight"`
	// State is closed, open or half_open; Reason says why an open
	// circuit opened, and Until when it lets its probe through.
	State  string     `json:"state"`
	Reason string     `json:"reason,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	// InFlight counts requests being served now.
	InFlight int64 `json:"in_flight"`
	// LatencyMS is the moving average of the time to first byte, in
	// milliseconds (0 until the first answer).
	LatencyMS           float64 `json:"latency_ms"`
	ConsecutiveFailures int     `json:"consecutive_failures"`
	// Recent covers the breaker's window of last requests.
	Recent struct {
		Requests int `json:"requests"`
		Failures int `json:"failures"`
	} `json:"recent"`
	// Requests and Failures count every request since the process started.
	Requests    uint64     `json:"requests"`
	Failures    uint64     `json:"failures"`
	LastError   string     `json:"last_error,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
}

// upstreams serves GET /arcane/upstreams.
func (a *adminRequest) upstreams(w http.ResponseWriter) error {
	now := healthNow()
	view := upstreamsView{Data: []modelUpstreams{}}
	for _, m := range a.app.catalog.Models() {
		mu := modelUpstreams{Model: m.ID, Deployments: make([]deploymentView, 0, len(m.Deployments))}
		for _, d := range m.Deployments {
			mu.Deployments = append(mu.Deployments, viewDeployment(d, now))
		}
		view.Data = append(view.Data, mu)
	}
	return writeJSON(w, http.StatusOK, view)
}

func viewDeployment(d *upstream.Deployment, now time.Time) deploymentView {
	s := d.Health.Snapshot(now)
	v := deploymentView{
		Name: d.Name(), Provider: d.Provider.Name, Model: d.Model, Weight: d.Weight,
		State: s.State.String(), Reason: s.Reason, InFlight: s.InFlight,
		LatencyMS:           float64(s.Latency.Microseconds()) / 1000,
		ConsecutiveFailures: s.ConsecutiveFailures,
		Requests:            s.Requests, Failures: s.Failures, LastError: s.LastError,
	}
	v.Recent.Requests, v.Recent.Failures = s.RecentRequests, s.RecentFailures
	if !s.Until.IsZero() {
		until := s.Until.UTC()
		v.Until = &until
	}
	if !s.LastFailure.IsZero() {
		at := s.LastFailure.UTC()
		v.LastFailure = &at
	}
	return v
}

// printUpstreams prints GET /arcane/upstreams as a table.
func (c *cli) printUpstreams(data []byte) error {
	var v upstreamsView
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return c.table("MODEL\tDEPLOYMENT\tWEIGHT\tSTATE\tIN FLIGHT\tLATENCY\tRECENT FAILURES\tLAST ERROR", func(w io.Writer) {
		for _, m := range v.Data {
			for _, d := range m.Deployments {
				state := d.State
				if d.Until != nil && d.State == "open" {
					state = fmt.Sprintf("open (%s) until %s", d.Reason, d.Until.Local().Format(time.TimeOnly))
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%.1fms\t%d/%d\t%s\n", m.Model, d.Name, d.Weight, state, d.InFlight,
					d.LatencyMS, d.Recent.Failures, d.Recent.Requests, d.LastError)
			}
		}
	})
}
