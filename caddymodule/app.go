package caddymodule

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
	"github.com/arcaneapi/caddy-arcane/upstream/tokens"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the arcane app: it owns what arcane's handlers and admin API share
// within one configuration, above all the store of accounts, keys and the
// ledger. Configure it with the `arcane` global option.
//
// The store itself outlives the App: it sits in a package-level pool keyed
// by its file's path, so a config reload reuses the open file.
type App struct {
	// Storage is the path of the bbolt database file that holds accounts,
	// keys and the ledger. Relative paths are resolved against the working
	// directory. Only one process may have the file open; use
	// `caddy reload` to reconfigure a running server. Default:
	// `arcane/arcane.db` in Caddy's data directory.
	Storage string `json:"storage,omitempty"`

	// OpenTimeout is how long to wait for the database file's lock before
	// giving up, so that a second Caddy (or `caddy validate` beside a
	// running one) fails fast with an explanation. Default: 2s.
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`

	// KeyCacheSize is how many API keys are kept in memory, so that
	// authenticating a recently seen key reads nothing from disk.
	// Default: 100000.
	KeyCacheSize int64 `json:"key_cache_size,omitempty"`

	// Providers are the upstream APIs, by name.
	Providers map[string]*ProviderConfig `json:"providers,omitempty"`

	// Models are the public models clients may call, with their
	// deployments and prices.
	Models []*ModelConfig `json:"models,omitempty"`

	// MaxRequestBody bounds a request body in bytes; larger bodies get 413.
	// Default: 4 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// DefaultMaxOutputTokens is the output cap a balance hold assumes for
	// a request that sets no max_tokens, to a model with no
	// max_output_tokens. A request is never charged more than its hold, so
	// give every model its real max_output_tokens. Default: 4096.
	DefaultMaxOutputTokens int64 `json:"default_max_output_tokens,omitempty"`

	// DefaultImageTokens is the prompt tokens a balance hold assumes for
	// each image in a request, on a model with no image_tokens. It is a
	// bound, not an estimate: a request is never charged more than its
	// hold, so set image_tokens on every model that takes images. For
	// scale: an OpenAI high-detail image costs at most 1,445 tokens on
	// gpt-4o (85 + 170 per 512px tile, at most 8 tiles, as for 768x2048;
	// the often-quoted 1,105 is a 2048x4096 image's 6), about 2,500 on the
	// patch-priced mini models (1,536 patches times 1.62) and 3,800 on
	// the nano ones, and over 48,000 on gpt-4o-mini, whose tiles are
	// dear in tokens to make up for its low token price; an Anthropic
	// image at most about 1,600 (width x height / 750, shrunk beyond
	// that). Default: 2000, which covers gpt-4o-class and Anthropic
	// models but not every model.
	DefaultImageTokens int64 `json:"default_image_tokens,omitempty"`

	// DefaultContextLength is the context length a balance hold assumes
	// for a request with a file part (a document by file_id or inline),
	// on a model with no context_length. Nothing in such a request bounds
	// its prompt but the model's context: a file_id is a few bytes naming
	// a document the provider holds, and a PDF is billed as the text and
	// an image of every page. Default: 2097152, the largest context of a
	// common model (Gemini 1.5 Pro's); set context_length on every model
	// that takes files.
	DefaultContextLength int64 `json:"default_context_length,omitempty"`

	// Failover bounds how a request moves on from a failing deployment to
	// the next.
	Failover *FailoverConfig `json:"failover,omitempty"`

	// Breaker is the circuit-breaking policy of every deployment.
	Breaker *BreakerConfig `json:"breaker,omitempty"`

	// RequestTimeout caps a request's whole time upstream, failover and
	// streaming included. A stream still running then ends with an
	// in-band error. Default: 30m.
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`

	// StreamKeepAlive, when set, sends a streaming client an SSE comment
	// (`: keep-alive`) at this interval while the answer's first event is
	// slow, so that clients and proxies that drop idle connections wait.
	// The first comment sends the 200 and the stream's headers: a request
	// that then fails before its first event ends with an in-band error
	// instead of an error status. Failover still works until the first
	// event. Default: off.
	StreamKeepAlive caddy.Duration `json:"stream_keepalive,omitempty"`

	// OverloadWait is how long a chat request waits at admission while
	// the gateway is behind on recording charges (more than 1,024
	// settlements waiting for the disk: a stalled or saturated disk, or a
	// CPU too busy to settle what it serves) before it is refused with 503
	// gateway_overloaded. While it waits it holds no money and has not
	// been sent upstream. Default: 10s.
	OverloadWait caddy.Duration `json:"overload_wait,omitempty"`

	// Demo, when true, makes sure an account named "demo" exists (with
	// $10.00 on first creation) and mints a fresh key for it at start,
	// printed once to standard error; earlier demo keys are revoked. It is
	// for trying arcane out (`make run`) and is off unless asked for.
	Demo bool `json:"demo,omitempty"`

	db       *database
	released bool
	logger   *zap.Logger
	catalog  *upstream.Catalog
	prices   map[string]billing.Price
	proxy    *upstream.Proxy
	maxBody  int64
	// defaultMaxOutput is DefaultMaxOutputTokens or its default.
	defaultMaxOutput int64
	// defaultImageTokens is DefaultImageTokens or its default.
	defaultImageTokens int64
	// defaultContext is DefaultContextLength or its default.
	defaultContext int64
	// overloadWait is OverloadWait or its default.
	overloadWait time.Duration
	// healthKeys are the deployment health entries this config holds.
	healthKeys []string
	// metrics are this config's; nil when Caddy gave no registry.
	metrics *metrics
}

// FailoverConfig bounds failover: a request whose deployment fails before
// anything was sent to the client (connection refused or reset, TLS
// failure, timeout before the response headers, 429, 5xx, a broken or
// unreadable answer, the gateway's credentials refused) goes to the next
// available deployment of its model.
type FailoverConfig struct {
	// Attempts is how many deployments one request may call, each once;
	// 1 turns failover off. Default: 3.
	Attempts int `json:"attempts,omitempty"`
	// TryDuration is how long after the first attempt began a further
	// one may start. Default: 10m (two hung deployments at the default
	// response_header_timeout).
	TryDuration caddy.Duration `json:"try_duration,omitempty"`
}

// BreakerConfig opens a deployment's circuit when it keeps failing: it then
// takes no traffic for a cool-down, after which one real request probes it;
// success closes the circuit, failure reopens it for twice as long (up to
// MaxCooldown). An upstream 429 with Retry-After opens it for that long.
type BreakerConfig struct {
	// Failures in a row that open the circuit. Default: 5.
	Failures int `json:"failures,omitempty"`
	// ErrorRate, 0 to 1, opens the circuit when that fraction of the last
	// Window requests failed. Default: 0.5.
	ErrorRate float64 `json:"error_rate,omitempty"`
	// Window is how many recent requests ErrorRate is taken over, 1 to 64.
	// Default: 20.
	Window int `json:"window,omitempty"`
	// Cooldown is how long an opened circuit stays open. Default: 30s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`
	// MaxCooldown bounds the doubling after failed probes. Default: 5m.
	MaxCooldown caddy.Duration `json:"max_cooldown,omitempty"`
}

// healthNow is the clock circuits are timed by; tests replace it before
// provisioning.
var healthNow = time.Now

// tokenCounter counts usage for providers that report none. Its
// vocabularies load once per process, on first use, and are shared by
// every config.
var tokenCounter = tokens.NewCounter()

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "arcane",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision opens (or shares) the store, so handlers can use it as soon as
// they are provisioned, whatever order the apps start in.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	catalog, prices, err := a.buildCatalog()
	if err != nil {
		return err
	}
	a.catalog, a.prices = catalog, prices
	a.proxy = &upstream.Proxy{Tokens: tokenCounter, RequestTimeout: time.Duration(a.RequestTimeout),
		KeepAlive: time.Duration(a.StreamKeepAlive), Now: healthNow}
	if f := a.Failover; f != nil {
		a.proxy.Attempts, a.proxy.TryDuration = f.Attempts, time.Duration(f.TryDuration)
	}
	if b := a.Breaker; b != nil {
		a.proxy.Breaker = upstream.Breaker{Failures: b.Failures, ErrorRate: b.ErrorRate, Window: b.Window,
			Cooldown: time.Duration(b.Cooldown), MaxCooldown: time.Duration(b.MaxCooldown)}
	}
	a.maxBody = a.MaxRequestBody
	if a.maxBody == 0 {
		a.maxBody = 4 << 20
	}
	a.defaultMaxOutput = a.DefaultMaxOutputTokens
	if a.defaultMaxOutput == 0 {
		a.defaultMaxOutput = 4096
	}
	a.proxy.DefaultMaxTokens = a.defaultMaxOutput
	a.defaultImageTokens = a.DefaultImageTokens
	if a.defaultImageTokens == 0 {
		a.defaultImageTokens = 2000
	}
	a.defaultContext = a.DefaultContextLength
	if a.defaultContext == 0 {
		a.defaultContext = 2_097_152
	}
	a.overloadWait = time.Duration(a.OverloadWait)
	if a.overloadWait == 0 {
		a.overloadWait = 10 * time.Second
	}
	path, err := databasePath(a.Storage)
	if err != nil {
		return err
	}
	timeout := time.Duration(a.OpenTimeout)
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	db, err := acquireDatabase(path, timeout, a.KeyCacheSize)
	if err != nil {
		return err
	}
	a.db = db
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if a.metrics, err = newMetrics(reg, a); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if a.OpenTimeout < 0 {
		return fmt.Errorf("open_timeout must not be negative")
	}
	if a.MaxRequestBody < 0 {
		return fmt.Errorf("max_request_body must not be negative")
	}
	if a.DefaultMaxOutputTokens < 0 {
		return fmt.Errorf("default_max_output_tokens must not be negative")
	}
	if a.DefaultImageTokens < 0 {
		return fmt.Errorf("default_image_tokens must not be negative")
	}
	if a.DefaultContextLength < 0 {
		return fmt.Errorf("default_context_length must not be negative")
	}
	if a.KeyCacheSize < 0 {
		return fmt.Errorf("key_cache_size must not be negative")
	}
	if a.RequestTimeout < 0 {
		return fmt.Errorf("request_timeout must not be negative")
	}
	if a.StreamKeepAlive < 0 {
		return fmt.Errorf("stream_keepalive must not be negative")
	}
	if a.OverloadWait < 0 {
		return fmt.Errorf("overload_wait must not be negative")
	}
	if f := a.Failover; f != nil && (f.Attempts < 0 || f.Attempts > upstream.MaxDeployments || f.TryDuration < 0) {
		return fmt.Errorf("failover: attempts must be 1 to %d and try_duration not negative", upstream.MaxDeployments)
	}
	if b := a.Breaker; b != nil {
		switch {
		case b.Failures < 0:
			return fmt.Errorf("breaker: failures must be positive")
		case b.ErrorRate < 0 || b.ErrorRate > 1:
			return fmt.Errorf("breaker: error_rate must be 0 to 1")
		case b.Window < 0 || b.Window > 64:
			return fmt.Errorf("breaker: window must be 1 to 64")
		case b.Cooldown < 0 || b.MaxCooldown < 0:
			return fmt.Errorf("breaker: cooldown and max_cooldown must not be negative")
		}
	}
	return nil
}

// Start mints the demo key when asked to. It runs only when a config is
// really started, never for `caddy validate`.
func (a *App) Start() error {
	if a.metrics != nil {
		// The store outlives configs: the running one observes it.
		a.db.store.ObserveCommits(a.metrics.observeCommit)
	}
	if a.Demo && a.db.demoDone.CompareAndSwap(false, true) {
		if err := startDemo(a.db); err != nil {
			a.db.demoDone.Store(false)
			return err
		}
	}
	return nil
}

// Stop does nothing: requests in flight finish with the store open, and
// Cleanup releases it.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's reference to the store; the last reference
// closes it. a.db stays set: a request of this config that outlives the
// grace period then gets an error from a closed store, not a nil pointer.
func (a *App) Cleanup() error {
	for _, key := range a.healthKeys {
		_, _ = healths.Delete(key)
	}
	a.healthKeys = nil
	if a.catalog != nil {
		for _, m := range a.catalog.Models() {
			for _, d := range m.Deployments {
				d.Provider.Client.CloseIdleConnections()
			}
		}
	}
	if a.db == nil || a.released {
		return nil
	}
	a.released = true
	return releaseDatabase(a.db.path)
}

// store and keys give handlers the shared services.
func (a *App) store() billing.Store      { return a.db.store }
func (a *App) keyring() *billing.Keyring { return a.db.keys }
func (a *App) bank() *billing.Bank       { return a.db.bank }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
