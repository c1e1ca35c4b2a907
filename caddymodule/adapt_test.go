package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt pins the Caddyfile translation of the arcane global
// option and directives. Each file in testdata/caddyfile_adapt holds a
// Caddyfile, a line of dashes, and either the expected JSON or a fragment
// of the expected error.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("missing the ---------- separator")
			}
			input, expected = strings.TrimSpace(input)+"\n", strings.TrimSpace(expected)
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, file, input, "caddyfile", expected) {
					t.Error("adapted JSON differs")
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
			if err == nil {
				t.Fatalf("adapting succeeded; want an error containing %q", expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Fatalf("error %q does not contain %q", err, expected)
			}
		})
	}
}
