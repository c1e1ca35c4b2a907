package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"mime"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/billing"
)

//go:embed templates/*.html static/*
var files embed.FS

// templates are parsed once, at init: a broken template fails every test.
var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"usd":   usd,
	"count": formatCount,
	"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"day":   func(t time.Time) string { return t.UTC().Format("Jan 2") },
	"join":  strings.Join,
	"neg":   func(a billing.Amount) billing.Amount { return -a },
	"add":   func(a, b int64) int64 { return a + b },
}).ParseFS(files, "templates/*.html"))

// static holds each asset with its content hash, for the URL and ETag.
var static = func() map[string]asset {
	out := map[string]asset{}
	entries, err := fs.ReadDir(files, "static")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		body, err := files.ReadFile("static/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(body)
		out[e.Name()] = asset{body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`,
			kind: mime.TypeByExtension(path.Ext(e.Name()))}
	}
	return out
}()

type asset struct {
	body       []byte
	etag, kind string
}

// page is what every template gets.
type page struct {
	Title string
	Base  string
	// Nav is the current section, for the menu.
	Nav string
	// CSRF is the token the page's forms carry.
	CSRF string
	// Signup is the sign-up mode.
	Signup  string
	Billing string
	// Version busts the assets' cache when they change.
	Version string
	Data    any
	visit   *visit
}

// User is the signed-in user, nil on the log-in pages.
func (p page) User() *billing.User {
	if p.visit == nil {
		return nil
	}
	return &p.visit.user
}

// assetVersion is a hash of every asset: their URLs change with them.
var assetVersion = versionOf(static)

// versionOf hashes the assets in name order: the same assets give the
// same version in every process.
func versionOf(assets map[string]asset) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(assets)) {
		h.Write([]byte(name))
		h.Write(assets[name].body)
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Title, p.Base, p.Signup, p.Billing, p.Version = h.cfg.Title, h.cfg.Base, h.cfg.Signup, h.cfg.Billing, assetVersion
	if p.visit != nil {
		p.CSRF = p.visit.session.CSRF
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, p); err != nil {
		h.logger.Error("rendering a dashboard page", zap.String("page", name), errField(err))
		http.Error(w, "The page could not be shown. Try again; if it persists, tell the operator.", http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	// Pages hold balances and, once, a key's secret: never cached.
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	a, ok := static[r.PathValue("file")]
	if !ok {
		h.notFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("ETag", a.etag)
	if r.URL.Query().Get("v") == assetVersion {
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hdr.Set("Cache-Control", "no-cache")
	}
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr.Set("Content-Type", a.kind)
	hdr.Set("Content-Length", strconv.Itoa(len(a.body)))
	if r.Method != http.MethodHead {
		w.Write(a.body)
	}
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusNotFound, "error", page{Data: "There is no such page."})
}

func (h *Handler) forbidden(w http.ResponseWriter, r *http.Request, msg string) {
	h.render(w, r, http.StatusForbidden, "error", page{Data: msg})
}

func (h *Handler) serverError(w http.ResponseWriter, r *http.Request, doing string, err error) {
	h.logger.Error("dashboard: "+doing, errField(err))
	h.render(w, r, http.StatusInternalServerError, "error", page{Data: "Something went wrong on our side while " + doing + ". Try again; if it persists, tell the operator."})
}

func errField(err error) zap.Field       { return zap.Error(err) }
func userField(u billing.User) zap.Field { return zap.String("user_id", u.ID) }
func keyField(id string) zap.Field       { return zap.String("key_id", id) }

// problem is a refusal a person reads, in sentences.
func problem(format string, a ...any) error { return formError(fmt.Sprintf(format, a...)) }

func (e formError) Error() string { return string(e) }

// formError is a refusal a person reads, in sentences.
type formError string

// usd formats an amount as dollars, with at least two decimals and no
// trailing zeros beyond them: $4.999981, $10.00, -$0.000014.
func usd(a billing.Amount) string {
	s := a.String()
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	dot := strings.IndexByte(s, '.')
	end := len(s)
	for end > dot+3 && s[end-1] == '0' {
		end--
	}
	return sign + "$" + group(s[:dot]) + s[dot:end]
}

// formatCount writes n with thousands separators: 1,234,567.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + group(s[1:])
	}
	return group(s)
}

func group(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	first := len(digits) % 3
	if first > 0 {
		b.WriteString(digits[:first])
	}
	for i := first; i < len(digits); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(digits[i : i+3])
	}
	return b.String()
}
