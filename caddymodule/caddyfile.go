package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
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
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] {
			return d.Errf("%s already specified", name)
		}
		seen[name] = true
		switch name {
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
		case "key_cache_size":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(d.Val(), 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("key_cache_size %q: expected a positive whole number", d.Val())
			}
			a.KeyCacheSize = n
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

var _ caddyfile.Unmarshaler = (*App)(nil)
