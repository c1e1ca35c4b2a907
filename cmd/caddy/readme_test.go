package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestREADMEClientExamples runs the README's client examples (the seed's
// curl, Python requests and JavaScript fetch, verbatim but for URL and key)
// against Caddyfile.example served as make run serves it.
func TestREADMEClientExamples(t *testing.T) {
	needBinary(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Clients\n")
	if !ok {
		t.Fatal("README has no Clients section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	blocks := regexp.MustCompile("(?s)```(sh|python|js)\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) != 3 {
		t.Fatalf("found %d example blocks in the Clients section, want sh, python and js", len(blocks))
	}

	h := newHarness(t)
	s := h.startServer("readme examples", true)
	key := s.demoKey()
	python := pythonWithRequests(t)
	for _, b := range blocks {
		lang := b[1]
		code := strings.ReplaceAll(b[2], "ak_your_api_key", key)
		code = strings.ReplaceAll(code, "http://localhost:8080", s.url(""))
		t.Run(lang, func(t *testing.T) {
			var cmd *exec.Cmd
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			switch lang {
			case "sh":
				cmd = exec.CommandContext(ctx, "bash", "-e", "-c", code)
			case "python":
				cmd = exec.CommandContext(ctx, python, "-c", code)
			case "js":
				cmd = exec.CommandContext(ctx, "node", "--input-type=module", "-e", code)
			}
			out, err := cmd.Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("%s example failed: %v\n%s%s", lang, err, redact(string(out)), redact(stderr))
			}
			text := string(out)
			switch lang {
			case "sh":
				// curl prints the whole chat.completion JSON.
				for _, want := range []string{`"object":"chat.completion"`, `"model":"gpt-5.2"`, `"usage"`} {
					if !strings.Contains(text, want) {
						t.Errorf("curl example output lacks %s:\n%s", want, redact(text))
					}
				}
			default:
				// The Python and JavaScript examples print the reply.
				if strings.TrimSpace(text) == "" || strings.Contains(text, "error") {
					t.Errorf("%s example printed %q, want the model's reply", lang, redact(text))
				}
			}
		})
	}
}

// pythonWithRequests finds a Python that can import requests: the one on
// PATH, else Debian's (.ci/run installs python3-requests when neither has
// it).
func pythonWithRequests(t *testing.T) string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import requests").Run() == nil {
			return p
		}
	}
	t.Fatal("no python3 with the requests package (Debian: apt-get install python3-requests)")
	return ""
}
