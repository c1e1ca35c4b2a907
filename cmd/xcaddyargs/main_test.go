package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestManifestMatchesGoMod keeps xcaddy.json honest: the release build
// (make build) must use the Caddy version go.mod pins, and must build this
// module from the checkout.
func TestManifestMatchesGoMod(t *testing.T) {
	args, err := buildArgs("../../xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(gomod)
	caddy := regexp.MustCompile(`(?m)^\s+github.com/caddyserver/caddy/v2 (\S+)$`).FindSubmatch(gomod)
	if module == nil || caddy == nil {
		t.Fatal("go.mod names no module or no Caddy requirement")
	}
	if args[0] != string(caddy[1]) {
		t.Errorf("xcaddy.json builds Caddy %s, go.mod requires %s", args[0], caddy[1])
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"--with " + string(module[1]) + "@",
		"--replace " + string(module[1]) + "=.",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("build arguments %q lack %q", line, want)
		}
	}
}

func TestManifestErrors(t *testing.T) {
	cases := map[string]string{
		"an unknown field is refused, not ignored": `{"caddy_version":"v2.11.9","race_detector":true}`,
		"a missing caddy_version is refused":       `{"plugins":[{"module_path":"x"}]}`,
		"a plugin without a path is refused":       `{"caddy_version":"v2.11.9","plugins":[{}]}`,
		"a replacement with a space is refused":    `{"caddy_version":"v2.11.9","replacements":[{"old":"a b","new":"."}]}`,
		"malformed JSON is refused":                `{"caddy_version":`,
	}
	for name, manifest := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "xcaddy.json")
			if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
				t.Fatal(err)
			}
			if args, err := buildArgs(path); err == nil {
				t.Fatalf("accepted, giving %q", args)
			}
		})
	}
}
