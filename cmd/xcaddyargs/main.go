// Command xcaddyargs reads xcaddy.json, arcane's build manifest, and prints
// the arguments of the `xcaddy build` that produces it, for the Makefile:
//
//	xcaddy build $(go run ./cmd/xcaddyargs xcaddy.json) --output bin/caddy
//
// xcaddy itself reads no manifest. Ours is shaped like xcaddy's Builder
// (the JSON tags of github.com/caddyserver/xcaddy.Builder), limited to the
// fields a command line can carry; any other field is an error, so the
// manifest never says something the build ignores.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// manifest is the subset of xcaddy.Builder that `xcaddy build` flags can
// express.
type manifest struct {
	CaddyVersion string `json:"caddy_version"`
	Plugins      []struct {
		ModulePath string `json:"module_path"`
		Version    string `json:"version,omitempty"`
	} `json:"plugins"`
	Replacements []struct {
		Old string `json:"old"`
		New string `json:"new"`
	} `json:"replacements"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: xcaddyargs <xcaddy.json>")
		os.Exit(2)
	}
	args, err := buildArgs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "xcaddyargs:", err)
		os.Exit(1)
	}
	fmt.Println(strings.Join(args, " "))
}

func buildArgs(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m.CaddyVersion == "" {
		return nil, fmt.Errorf("%s: caddy_version is required", path)
	}
	args := []string{m.CaddyVersion}
	for _, p := range m.Plugins {
		if p.ModulePath == "" || strings.ContainsAny(p.ModulePath+p.Version, " \t\n") {
			return nil, fmt.Errorf("%s: invalid plugin %q", path, p.ModulePath)
		}
		with := p.ModulePath
		if p.Version != "" {
			with += "@" + p.Version
		}
		args = append(args, "--with", with)
	}
	for _, r := range m.Replacements {
		if r.Old == "" || r.New == "" || strings.ContainsAny(r.Old+r.New, " \t\n") {
			return nil, fmt.Errorf("%s: invalid replacement %q => %q", path, r.Old, r.New)
		}
		args = append(args, "--replace", r.Old+"="+r.New)
	}
	return args, nil
}
