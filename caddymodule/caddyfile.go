package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("arcane", parseGlobalOption)
}

// parseGlobalOption turns the `arcane` global option into the arcane app.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the arcane global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "arcane", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	arcane {
//		storage        <path>
//		open_timeout   <duration>
//		key_cache_size <n>
//		demo           [on|off]
//		max_request_body <size>
//		default_max_output_tokens <n>
//		default_image_tokens <n>
//		default_context_length <n>
//		request_timeout <duration>
//		stream_keepalive <duration>
//		overload_wait   <duration>
//		failover {
//			attempts     <n>
//			try_duration <duration>
//		}
//		breaker {
//			failures     <n>
//			error_rate   <0..1>
//			window       <n>
//			cooldown     <duration>
//			max_cooldown <duration>
//		}
//		provider <name> {
//			type     openai|anthropic|mock
//			base_url <url>
//			api_key  <key, as {env.NAME}>
//			dial_timeout <duration>
//			response_header_timeout <duration>
//			idle_timeout <duration>
//			# mock only:
//			format openai|anthropic
//			time_to_first_token <duration>
//			tokens_per_second <n>
//			reply_tokens <n>
//			error_rate <0..1>
//		}
//		model <id> {
//			deploy <provider> <provider-model-id> [<weight>] [weight <n>] [api_key <key>]
//			price input <usd> output <usd> [cached_input <usd>] [cache_write <usd>]  # per 1M tokens
//			context_length <n>
//			max_output_tokens <n>
//			image_tokens <n>
//			owned_by <name>
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && name != "provider" && name != "model" {
			return d.Errf("%s already specified", name)
		}
		seen[name] = true
		switch name {
		case "provider":
			if err := a.unmarshalProvider(d); err != nil {
				return err
			}
			continue
		case "model":
			if err := a.unmarshalModel(d); err != nil {
				return err
			}
			continue
		case "failover":
			if err := a.unmarshalFailover(d); err != nil {
				return err
			}
			continue
		case "breaker":
			if err := a.unmarshalBreaker(d); err != nil {
				return err
			}
			continue
		case "request_timeout", "stream_keepalive", "overload_wait":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s %q: expected a positive duration such as 15s", name, d.Val())
			}
			switch name {
			case "request_timeout":
				a.RequestTimeout = caddy.Duration(dur)
			case "stream_keepalive":
				a.StreamKeepAlive = caddy.Duration(dur)
			default:
				a.OverloadWait = caddy.Duration(dur)
			}
		case "max_request_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(d.Val())
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("max_request_body %q: expected a size such as 4MiB", d.Val())
			}
			a.MaxRequestBody = int64(size)
		case "storage":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.Storage = d.Val()
		case "open_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("open_timeout %q: %v", d.Val(), err)
			}
			a.OpenTimeout = caddy.Duration(dur)
		case "key_cache_size", "default_max_output_tokens", "default_image_tokens", "default_context_length":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(d.Val(), 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("%s %q: expected a positive whole number", name, d.Val())
			}
			switch name {
			case "key_cache_size":
				a.KeyCacheSize = n
			case "default_max_output_tokens":
				a.DefaultMaxOutputTokens = n
			case "default_image_tokens":
				a.DefaultImageTokens = n
			default:
				a.DefaultContextLength = n
			}
		case "demo":
			a.Demo = true
			if d.NextArg() {
				switch d.Val() {
				case "on", "true":
				case "off", "false", "":
					a.Demo = false
				default:
					return d.Errf("demo %q: expected on or off", d.Val())
				}
			}
		default:
			return d.Errf("unrecognized arcane option %q", name)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

func (a *App) unmarshalProvider(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if _, dup := a.Providers[name]; dup {
		return d.Errf("provider %s already defined", name)
	}
	pc := new(ProviderConfig)
	err := blockOptions(d, "provider "+name, func(opt, val string) error {
		switch opt {
		case "type":
			pc.Type = val
		case "format":
			pc.Format = val
		case "base_url":
			pc.BaseURL = val
		case "api_key":
			pc.APIKey = val
		case "dial_timeout", "response_header_timeout", "idle_timeout", "time_to_first_token":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur < 0 {
				return d.Errf("provider %s: %s %q: expected a duration such as 10s", name, opt, val)
			}
			switch opt {
			case "dial_timeout":
				pc.DialTimeout = caddy.Duration(dur)
			case "response_header_timeout":
				pc.ResponseHeaderTimeout = caddy.Duration(dur)
			case "idle_timeout":
				pc.IdleTimeout = caddy.Duration(dur)
			default:
				pc.TimeToFirstToken = caddy.Duration(dur)
			}
		case "tokens_per_second", "error_rate":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || f < 0 || (opt == "error_rate" && f > 1) {
				return d.Errf("provider %s: %s %q: expected a number (error_rate: 0 to 1)", name, opt, val)
			}
			if opt == "error_rate" {
				pc.ErrorRate = f
			} else {
				pc.TokensPerSecond = f
			}
		case "reply_tokens":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return d.Errf("provider %s: reply_tokens %q: expected a positive whole number", name, val)
			}
			pc.ReplyTokens = n
		default:
			return d.Errf("provider %s: unrecognized option %q", name, opt)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if pc.Type == "" {
		return d.Errf("provider %s: type is required (openai, anthropic or mock)", name)
	}
	if a.Providers == nil {
		a.Providers = make(map[string]*ProviderConfig)
	}
	a.Providers[name] = pc
	return nil
}

func (a *App) unmarshalModel(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	mc := &ModelConfig{ID: d.Val()}
	if d.NextArg() {
		return d.ArgErr()
	}
	for _, m := range a.Models {
		if m.ID == mc.ID {
			return d.Errf("model %s already defined", mc.ID)
		}
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && opt != "deploy" {
			return d.Errf("model %s: %s already specified", mc.ID, opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		switch opt {
		case "deploy":
			dc, err := parseDeploy(args)
			if err != nil {
				return d.Errf("model %s: %v", mc.ID, err)
			}
			mc.Deployments = append(mc.Deployments, dc)
		case "price":
			if err := parsePrice(&mc.Price, args); err != nil {
				return d.Errf("model %s: price: %v", mc.ID, err)
			}
		case "context_length", "max_output_tokens", "image_tokens":
			if len(args) != 1 {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("model %s: %s %q: expected a positive whole number", mc.ID, opt, args[0])
			}
			switch opt {
			case "context_length":
				mc.ContextLength = n
			case "max_output_tokens":
				mc.MaxOutputTokens = n
			default:
				mc.ImageTokens = n
			}
		case "owned_by":
			if len(args) != 1 {
				return d.ArgErr()
			}
			mc.OwnedBy = args[0]
		default:
			return d.Errf("model %s: unrecognized option %q", mc.ID, opt)
		}
	}
	if len(mc.Deployments) == 0 {
		return d.Errf("model %s: at least one deploy line is required", mc.ID)
	}
	if !seen["price"] {
		return d.Errf("model %s: a price line is required (price input <usd> output <usd>, per 1M tokens)", mc.ID)
	}
	a.Models = append(a.Models, mc)
	return nil
}

// parseDeploy reads `<provider> <provider-model-id> [<weight>] [weight <n>]
// [api_key <key>]`.
func parseDeploy(args []string) (DeploymentConfig, error) {
	const syntax = "expected deploy <provider> <provider-model-id> [<weight>] [weight <n>] [api_key <key>]"
	if len(args) < 2 {
		return DeploymentConfig{}, fmt.Errorf("%s", syntax)
	}
	dc := DeploymentConfig{Provider: args[0], Model: args[1]}
	rest := args[2:]
	weight := func(v string) error {
		w, err := strconv.Atoi(v)
		if err != nil || w <= 0 || w > upstream.MaxWeight {
			return fmt.Errorf("deploy weight %q: expected a whole number from 1 to %d", v, upstream.MaxWeight)
		}
		if dc.Weight != 0 {
			return fmt.Errorf("deploy weight given twice")
		}
		dc.Weight = w
		return nil
	}
	if len(rest)%2 == 1 {
		if rest[0] == "weight" || rest[0] == "api_key" {
			// Not naming the dangling word: it may be a key.
			return dc, fmt.Errorf("deploy options weight and api_key each need one value: %s", syntax)
		}
		if err := weight(rest[0]); err != nil {
			return dc, err
		}
		rest = rest[1:]
	}
	for i := 0; i < len(rest); i += 2 {
		switch rest[i] {
		case "weight":
			if err := weight(rest[i+1]); err != nil {
				return dc, err
			}
		case "api_key":
			if dc.APIKey != "" {
				return dc, fmt.Errorf("deploy api_key given twice")
			}
			dc.APIKey = rest[i+1]
		default:
			return dc, fmt.Errorf("deploy option %q: %s", rest[i], syntax)
		}
	}
	return dc, nil
}

// unmarshalFailover reads the failover block.
func (a *App) unmarshalFailover(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	f := new(FailoverConfig)
	err := blockOptions(d, "failover", func(opt, val string) error {
		switch opt {
		case "attempts":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 || n > upstream.MaxDeployments {
				return d.Errf("failover: attempts %q: expected a whole number from 1 to %d", val, upstream.MaxDeployments)
			}
			f.Attempts = n
		case "try_duration":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur <= 0 {
				return d.Errf("failover: try_duration %q: expected a positive duration such as 60s", val)
			}
			f.TryDuration = caddy.Duration(dur)
		default:
			return d.Errf("failover: unrecognized option %q", opt)
		}
		return nil
	})
	a.Failover = f
	return err
}

// unmarshalBreaker reads the breaker block.
func (a *App) unmarshalBreaker(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	b := new(BreakerConfig)
	err := blockOptions(d, "breaker", func(opt, val string) error {
		switch opt {
		case "failures", "window":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 || (opt == "window" && n > 64) {
				return d.Errf("breaker: %s %q: expected a positive whole number (window: at most 64)", opt, val)
			}
			if opt == "failures" {
				b.Failures = n
			} else {
				b.Window = n
			}
		case "error_rate":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || f <= 0 || f > 1 {
				return d.Errf("breaker: error_rate %q: expected a fraction above 0, at most 1, such as 0.5", val)
			}
			b.ErrorRate = f
		case "cooldown", "max_cooldown":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur <= 0 {
				return d.Errf("breaker: %s %q: expected a positive duration such as 30s", opt, val)
			}
			if opt == "cooldown" {
				b.Cooldown = caddy.Duration(dur)
			} else {
				b.MaxCooldown = caddy.Duration(dur)
			}
		default:
			return d.Errf("breaker: unrecognized option %q", opt)
		}
		return nil
	})
	a.Breaker = b
	return err
}

// blockOptions reads a block of `<option> <value>` lines, refusing an
// option given twice or without exactly one value, and calls set for each;
// what names the block in errors.
func blockOptions(d *caddyfile.Dispenser, what string, set func(opt, val string) error) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s: %s already specified", what, opt)
		}
		seen[opt] = true
		if !d.NextArg() {
			return d.ArgErr()
		}
		if err := set(opt, d.Val()); err != nil {
			return err
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// parsePrice reads `input X output Y [cached_input Z] [cache_write W]`, USD
// per 1M tokens.
func parsePrice(p *billing.Price, args []string) error {
	if len(args)%2 != 0 {
		return fmt.Errorf("expected pairs: input <usd> output <usd> [cached_input <usd>] [cache_write <usd>]")
	}
	seen := make(map[string]bool)
	for i := 0; i < len(args); i += 2 {
		kind, val := args[i], args[i+1]
		if seen[kind] {
			return fmt.Errorf("%s given twice", kind)
		}
		seen[kind] = true
		amt, err := billing.ParseAmount(val)
		if err != nil {
			return err
		}
		if amt < 0 {
			return fmt.Errorf("%s %s: must not be negative", kind, val)
		}
		switch kind {
		case "input":
			p.Input = amt
		case "output":
			p.Output = amt
		case "cached_input":
			p.CachedInput = &amt
		case "cache_write":
			p.CacheWrite = &amt
		default:
			return fmt.Errorf("unknown price kind %q (want input, output, cached_input or cache_write)", kind)
		}
	}
	if !seen["input"] || !seen["output"] {
		return fmt.Errorf("both input and output prices are required")
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*App)(nil)
