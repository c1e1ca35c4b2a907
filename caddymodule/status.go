package caddymodule

import (
	"encoding/json"
	"net/http"
	"runtime/debug"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/upstream"
)

func init() {
	caddy.RegisterModule(Status{})
	httpcaddyfile.RegisterHandlerDirective("arcane_status", parseStatus)
	httpcaddyfile.RegisterDirectiveOrder("arcane_status", httpcaddyfile.Before, "respond")
}

// Status answers `GET /v1/status`, the health check: the overall `status`
// (`ok`; `degraded` when some deployment's circuit is open; `down`, with
// 503, when the store cannot be read or no model can be served), arcane's
// version, the store's state, and each model's deployments by provider
// with their circuit state. It is a terminal handler.
type Status struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Status) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_status",
		New: func() caddy.Module { return new(Status) },
	}
}

// Provision finds the arcane app.
func (h *Status) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app, h.logger = app, ctx.Logger()
	return nil
}

type statusBody struct {
	Status  string                 `json:"status"`
	Version string                 `json:"version"`
	Store   storeStatus            `json:"store"`
	Models  map[string]modelStatus `json:"models"`
}

// modelStatus reports a model's deployments by provider name only: the
// providers' own model ids are not for clients.
type modelStatus struct {
	Status      string             `json:"status"`
	Deployments []deploymentStatus `json:"deployments"`
}

type deploymentStatus struct {
	Provider string `json:"provider"`
	Status   string `json:"status"`
}

type storeStatus struct {
	Status string `json:"status"`
}

func (h *Status) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Use GET for /v1/status."})
		return nil
	}
	body := statusBody{Status: "ok", Version: version(), Store: storeStatus{Status: "ok"}, Models: map[string]modelStatus{}}
	models, down, degraded, now := h.app.catalog.Models(), 0, 0, healthNow()
	for _, m := range models {
		ms := modelStatus{Status: "ok"}
		available := 0
		for _, d := range m.Deployments {
			snap := d.Health.Snapshot(now)
			ds := deploymentStatus{Provider: d.Provider.Name, Status: "ok"}
			switch snap.State {
			case upstream.StateOpen:
				ds.Status = "open"
			case upstream.StateHalfOpen:
				ds.Status = "half_open"
			}
			if ds.Status != "ok" {
				ms.Status = "degraded"
			}
			if d.Health.Available(now) {
				available++
			}
			ms.Deployments = append(ms.Deployments, ds)
		}
		switch {
		case available == 0:
			ms.Status = "down"
			down++
		case ms.Status != "ok":
			degraded++
		}
		body.Models[m.ID] = ms
	}
	status := http.StatusOK
	storeErr := h.app.store().Ping()
	switch {
	case storeErr != nil:
		h.logger.Error("store health check failed", zap.Error(storeErr))
		body.Status, body.Store.Status, status = "down", "unavailable", http.StatusServiceUnavailable
	case len(models) > 0 && down == len(models):
		body.Status, status = "down", http.StatusServiceUnavailable
	case down > 0 || degraded > 0:
		body.Status = "degraded"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		return json.NewEncoder(w).Encode(&body)
	}
	return nil
}

// version is arcane's module version as Go recorded it in the binary:
// a tag for release builds, "(devel)" for builds from a checkout.
var version = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	const path = "github.com/arcaneapi/caddy-arcane"
	if info.Main.Path == path {
		return info.Main.Version
	}
	for _, dep := range info.Deps {
		if dep.Path == path {
			if dep.Replace != nil && dep.Replace.Version == "" {
				return "(devel)"
			}
			return dep.Version
		}
	}
	return "unknown"
})

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_status
func (h *Status) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("arcane_status takes no options, found %q", d.Val())
	}
	return nil
}

func parseStatus(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var s Status
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return &s, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Status)(nil)
	_ caddyhttp.MiddlewareHandler = (*Status)(nil)
	_ caddyfile.Unmarshaler       = (*Status)(nil)
)
