package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
	"github.com/arcaneapi/caddy-arcane/upstream/mock"
)

// ProviderConfig is one upstream API in the arcane app's configuration.
type ProviderConfig struct {
	// Type is the wire format: `openai` (any OpenAI-compatible API: OpenAI,
	// vLLM, llama.cpp's server, Ollama, Groq, ...), `anthropic` (Anthropic's
	// Messages API, translated both ways), or `mock` (a built-in
	// deterministic upstream, for trying arcane out and for load tests).
	Type string `json:"type"`

	// BaseURL is the API's base: `/chat/completions` is appended for
	// `openai` (e.g. `https://api.openai.com/v1`), `/v1/messages` for
	// `anthropic` (default `https://api.anthropic.com`). Not used by `mock`.
	BaseURL string `json:"base_url,omitempty"`

	// Format (mock only) is the wire format the mock speaks: `openai`
	// (default) or `anthropic`, so an Anthropic-shaped model can be tried
	// with no provider account.
	Format string `json:"format,omitempty"`

	// APIKey is the gateway's key for this provider: sent as a Bearer token
	// to `openai` providers and as `x-api-key` to `anthropic` ones.
	// Give it as a placeholder such as `{env.OPENAI_API_KEY}`: it is
	// resolved when the config is provisioned, so the key itself never
	// appears in the config Caddy's admin API shows.
	APIKey string `json:"api_key,omitempty"`

	// DialTimeout bounds connecting to the provider. Default: 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// ResponseHeaderTimeout bounds the wait for the provider's response
	// headers once the request is sent: for a non-streamed answer that is
	// the whole generation, for a stream its start. A deployment that
	// times out counts as failed and the request moves on to the next one.
	// Default: 5m.
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`

	// IdleTimeout bounds the wait between reads of an answer after its
	// headers: between stream events. A stream that stalls longer ends
	// with an in-band error (or, before its first event, moves to the next
	// deployment). Raise it for models that think silently for long.
	// Default: 5m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// TimeToFirstToken (mock only) delays the first token. Default: 0.
	TimeToFirstToken caddy.Duration `json:"time_to_first_token,omitempty"`
	// TokensPerSecond (mock only) paces streamed tokens; 0 sends them as
	// fast as possible.
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	// ReplyTokens (mock only) is the length of a reply when the request
	// sets no max_tokens. Default: 16.
	ReplyTokens int `json:"reply_tokens,omitempty"`
	// ErrorRate (mock only) is the fraction of requests, 0 to 1, answered
	// with a 500, spread evenly.
	ErrorRate float64 `json:"error_rate,omitempty"`
}

// DeploymentConfig puts a public model on a provider.
type DeploymentConfig struct {
	// Provider names one of the app's providers.
	Provider string `json:"provider"`
	// Model is the provider's own id for the model; clients never see it.
	Model string `json:"model"`
	// Weight shares traffic between a model's deployments, in proportion,
	// when they are equally fast and idle. Default: 1.
	Weight int `json:"weight,omitempty"`
	// APIKey, when set, replaces the provider's api_key for this
	// deployment, so that one provider can serve a model through several
	// keys (each with its own rate limits and health). A placeholder such
	// as `{env.OPENAI_KEY_2}`, like the provider's.
	APIKey string `json:"api_key,omitempty"`
}

// ModelConfig is one public model.
type ModelConfig struct {
	// ID is the model id clients ask for, e.g. `gpt-5.2`.
	ID string `json:"id"`
	// Deployments serve the model; at least one.
	Deployments []DeploymentConfig `json:"deployments"`
	// Price in USD per one million tokens, as decimal strings.
	Price billing.Price `json:"price"`
	// ContextLength, when known, is reported by /v1/models.
	ContextLength int64 `json:"context_length,omitempty"`
	// MaxOutputTokens, when known, is the longest reply the model gives;
	// balance holds will size their worst case with it. arcane does not
	// enforce it on requests.
	MaxOutputTokens int64 `json:"max_output_tokens,omitempty"`
	// ImageTokens is the most prompt tokens one image can cost on this
	// model. An image is billed by its pixels, not its bytes in the
	// request (a URL is a few dozen), so balance holds, which bound the
	// prompt by the body's bytes, add this much per image. Look it up in the
	// provider's vision pricing for the largest image the model accepts.
	// Default: the app's default_image_tokens.
	ImageTokens int64 `json:"image_tokens,omitempty"`
	// OwnedBy is reported by /v1/models. Default: the first deployment's
	// provider name.
	OwnedBy string `json:"owned_by,omitempty"`
}

// healths holds each deployment's passive health, keyed by what the
// deployment is (provider name, type, base URL, model and a digest of the
// key it uses), so a config reload keeps it. Each App releases the keys it
// acquired in Cleanup.
var healths = caddy.NewUsagePool()

type healthEntry struct{ *upstream.Health }

func (healthEntry) Destruct() error { return nil }

func (a *App) acquireHealth(provider string, pc *ProviderConfig, model, apiKey string) *upstream.Health {
	digest := sha256.Sum256([]byte(apiKey))
	key := provider + "\x00" + pc.Type + "\x00" + pc.BaseURL + "\x00" + model + "\x00" + hex.EncodeToString(digest[:8])
	val, _, _ := healths.LoadOrNew(key, func() (caddy.Destructor, error) {
		return healthEntry{new(upstream.Health)}, nil
	})
	a.healthKeys = append(a.healthKeys, key)
	return val.(healthEntry).Health
}

// buildCatalog turns the configuration into providers and a catalog,
// naming the provider or model at fault in every error.
func (a *App) buildCatalog() (*upstream.Catalog, map[string]billing.Price, error) {
	repl := caddy.NewReplacer()
	providers := make(map[string]*upstream.Provider, len(a.Providers))
	for name, pc := range a.Providers {
		p, err := newProvider(name, pc, repl)
		if err != nil {
			return nil, nil, err
		}
		providers[name] = p
	}
	models := make([]*upstream.Model, 0, len(a.Models))
	prices := make(map[string]billing.Price, len(a.Models))
	created := time.Now().Unix()
	for _, mc := range a.Models {
		if mc.ID == "" {
			return nil, nil, fmt.Errorf("a model needs an id")
		}
		if mc.Price.Input < 0 || mc.Price.Output < 0 || (mc.Price.CachedInput != nil && *mc.Price.CachedInput < 0) ||
			(mc.Price.CacheWrite != nil && *mc.Price.CacheWrite < 0) {
			return nil, nil, fmt.Errorf("model %s: prices must not be negative", mc.ID)
		}
		if mc.ContextLength < 0 || mc.MaxOutputTokens < 0 || mc.ImageTokens < 0 {
			return nil, nil, fmt.Errorf("model %s: context_length, max_output_tokens and image_tokens must not be negative", mc.ID)
		}
		m := &upstream.Model{ID: mc.ID, ContextLength: mc.ContextLength, MaxOutputTokens: mc.MaxOutputTokens,
			ImageTokens: mc.ImageTokens, OwnedBy: mc.OwnedBy, Created: created}
		for _, dc := range mc.Deployments {
			p, ok := providers[dc.Provider]
			if !ok {
				return nil, nil, fmt.Errorf("model %s: deploy names unknown provider %q", mc.ID, dc.Provider)
			}
			if dc.Model == "" {
				return nil, nil, fmt.Errorf("model %s: deploy on %s needs the provider's model id", mc.ID, dc.Provider)
			}
			if dc.Weight < 0 {
				return nil, nil, fmt.Errorf("model %s: deploy weight must be positive", mc.ID)
			}
			key, err := repl.ReplaceOrErr(dc.APIKey, true, true)
			if err != nil {
				return nil, nil, fmt.Errorf("model %s: deploy on %s: api_key: %w", mc.ID, dc.Provider, err)
			}
			effective := key
			if effective == "" {
				effective = p.APIKey
			}
			m.Deployments = append(m.Deployments, &upstream.Deployment{Provider: p, Model: dc.Model, Weight: dc.Weight, APIKey: key,
				Health: a.acquireHealth(dc.Provider, a.Providers[dc.Provider], dc.Model, effective)})
		}
		if m.OwnedBy == "" && len(m.Deployments) > 0 {
			m.OwnedBy = m.Deployments[0].Provider.Name
		}
		models = append(models, m)
		prices[mc.ID] = mc.Price
	}
	catalog, err := upstream.NewCatalog(models)
	if err != nil {
		return nil, nil, err
	}
	return catalog, prices, nil
}

func newProvider(name string, pc *ProviderConfig, repl *caddy.Replacer) (*upstream.Provider, error) {
	if pc == nil {
		return nil, fmt.Errorf("provider %s: empty configuration", name)
	}
	key, err := repl.ReplaceOrErr(pc.APIKey, true, true)
	if err != nil {
		return nil, fmt.Errorf("provider %s: api_key: %w", name, err)
	}
	var client *http.Client
	typ, base := upstream.ProviderType(pc.Type), pc.BaseURL
	if pc.Format != "" && typ != upstream.TypeMock {
		return nil, fmt.Errorf("provider %s: format is an option of type mock", name)
	}
	switch typ {
	case upstream.TypeMock:
		switch pc.Format {
		case "", "openai":
		case "anthropic":
			// The mock answers Anthropic's Messages API, so the gateway
			// talks to it as to Anthropic.
			typ, base = upstream.TypeAnthropic, "http://mock.invalid"
		default:
			return nil, fmt.Errorf("provider %s: format %q: want openai or anthropic", name, pc.Format)
		}
		if pc.ErrorRate < 0 || pc.ErrorRate > 1 || pc.TokensPerSecond < 0 || pc.ReplyTokens < 0 {
			return nil, fmt.Errorf("provider %s: error_rate must be 0 to 1; tokens_per_second and reply_tokens must not be negative", name)
		}
		client = &http.Client{Transport: &mock.Transport{Handler: mock.NewHandler(mock.Config{
			TimeToFirstToken: time.Duration(pc.TimeToFirstToken),
			TokensPerSecond:  pc.TokensPerSecond,
			ReplyTokens:      pc.ReplyTokens,
			ErrorRate:        pc.ErrorRate,
		})}}
	default:
		client = &http.Client{Transport: newTransport(pc)}
	}
	p, err := upstream.NewProvider(name, typ, base, key, client)
	if err != nil {
		return nil, err
	}
	p.ResponseHeaderTimeout, p.IdleTimeout = time.Duration(pc.ResponseHeaderTimeout), time.Duration(pc.IdleTimeout)
	return p, nil
}

// newTransport is one provider's connection pool. The proxy times the
// wait for response headers and between reads itself, for every provider
// type alike; the transport bounds connecting.
//
// An HTTP/1.1 connection's buffers are 1 KiB each way, not net/http's
// 4 KiB, as a stream keeps its connection, buffers included, for as long
// as it lasts. Out, the buffer takes the request's headers, and for a
// short request the start of its body; what does not fit goes to the
// socket directly (in writes of up to 32 KiB) whatever the buffer's size,
// so a smaller one costs a second write only to a request of about 1 to
// 2 KiB. (A stream's body is sent after its headers in any case: see
// upstream.sentBody.) In, it takes the response's header lines and
// chunk-size lines (a longer header block takes one more read; the proxy
// reads bodies into buffers of its own). HTTP/2 connections have buffers
// of their own, shared by all their requests.
func newTransport(pc *ProviderConfig) *http.Transport {
	dial := time.Duration(pc.DialTimeout)
	if dial <= 0 {
		dial = 10 * time.Second
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dial,
		ExpectContinueTimeout: time.Second,
		ReadBufferSize:        1 << 10,
		WriteBufferSize:       1 << 10,
	}
}
