package caddymodule

import (
	"encoding/json"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func init() {
	caddy.RegisterModule(Models{})
	httpcaddyfile.RegisterHandlerDirective("arcane_models", parseModels)
	httpcaddyfile.RegisterDirectiveOrder("arcane_models", httpcaddyfile.Before, "respond")
}

// Models answers `GET /v1/models`: the catalog in OpenAI's list shape, with
// each model's price in US dollars per token as decimal strings (prompt,
// completion and, when set, input_cache_read and input_cache_write) and its
// context length when known. A key with a model allow-list sees only those models. It is a
// terminal handler.
type Models struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (Models) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_models",
		New: func() caddy.Module { return new(Models) },
	}
}

// Provision finds the arcane app.
func (h *Models) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID            string       `json:"id"`
	Object        string       `json:"object"`
	Created       int64        `json:"created"`
	OwnedBy       string       `json:"owned_by"`
	Pricing       modelPricing `json:"pricing"`
	ContextLength int64        `json:"context_length,omitempty"`
}

type modelPricing struct {
	Prompt          string `json:"prompt"`
	Completion      string `json:"completion"`
	InputCacheRead  string `json:"input_cache_read,omitempty"`
	InputCacheWrite string `json:"input_cache_write,omitempty"`
}

func (h *Models) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Use GET for /v1/models."})
		return nil
	}
	c := callFrom(w, r)
	list := modelList{Object: "list", Data: []modelInfo{}}
	for _, m := range h.app.catalog.Models() {
		if !keyMayUse(c.Principal, m.ID) {
			continue
		}
		price := h.app.prices[m.ID]
		info := modelInfo{
			ID: m.ID, Object: "model", Created: m.Created, OwnedBy: m.OwnedBy, ContextLength: m.ContextLength,
			Pricing: modelPricing{Prompt: billing.PerToken(price.Input), Completion: billing.PerToken(price.Output)},
		}
		if price.CachedInput != nil {
			info.Pricing.InputCacheRead = billing.PerToken(*price.CachedInput)
		}
		if price.CacheWrite != nil {
			info.Pricing.InputCacheWrite = billing.PerToken(*price.CacheWrite)
		}
		list.Data = append(list.Data, info)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(w).Encode(&list)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_models
func (h *Models) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("arcane_models takes no options, found %q", d.Val())
	}
	return nil
}

func parseModels(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Models
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Models)(nil)
	_ caddyhttp.MiddlewareHandler = (*Models)(nil)
	_ caddyfile.Unmarshaler       = (*Models)(nil)
)
