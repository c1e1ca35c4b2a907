package upstream

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func testProvider(t *testing.T, name string) *Provider {
	t.Helper()
	p, err := NewProvider(name, TypeOpenAI, "http://127.0.0.1:1/v1/", "", http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewProvider(t *testing.T) {
	cases := []struct {
		name, typ, baseURL, wantErr, endpoint string
	}{
		{"an openai provider gets its chat completions endpoint", "openai", "https://api.example.com/v1/", "", "https://api.example.com/v1/chat/completions"},
		{"a mock provider needs no base URL", "mock", "", "", "http://mock.invalid/v1/chat/completions"},
		{"an anthropic provider gets the messages endpoint", "anthropic", "https://api.anthropic.com", "", "https://api.anthropic.com/v1/messages"},
		{"an anthropic base URL may end in /v1", "anthropic", "https://proxy.example.com/anthropic/v1/", "", "https://proxy.example.com/anthropic/v1/messages"},
		{"an anthropic provider defaults to Anthropic's API", "anthropic", "", "", "https://api.anthropic.com/v1/messages"},
		{"an unknown type is refused", "gemini", "https://x", "unknown type", ""},
		{"a relative base URL is refused", "openai", "/v1", "absolute http or https URL", ""},
		{"a non-HTTP base URL is refused", "openai", "ftp://x/v1", "absolute http or https URL", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewProvider("p", ProviderType(tc.typ), tc.baseURL, "", http.DefaultClient)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Endpoint != tc.endpoint {
				t.Fatalf("endpoint = %s, want %s", p.Endpoint, tc.endpoint)
			}
		})
	}
}

func TestNewCatalog(t *testing.T) {
	p := testProvider(t, "p")
	dep := func() []*Deployment { return []*Deployment{{Provider: p, Model: "m"}} }
	t.Run("models are listed in id order", func(t *testing.T) {
		c, err := NewCatalog([]*Model{{ID: "b", Deployments: dep()}, {ID: "a", Deployments: dep()}})
		if err != nil {
			t.Fatal(err)
		}
		if ms := c.Models(); ms[0].ID != "a" || ms[1].ID != "b" {
			t.Fatalf("order = %s, %s", ms[0].ID, ms[1].ID)
		}
		if _, ok := c.Lookup("a"); !ok {
			t.Fatal("a not found")
		}
		if _, ok := c.Lookup("c"); ok {
			t.Fatal("c found")
		}
	})
	for name, models := range map[string][]*Model{
		"a model defined twice is refused":       {{ID: "a", Deployments: dep()}, {ID: "a", Deployments: dep()}},
		"a model without deployments is refused": {{ID: "a"}},
		"a model without an id is refused":       {{Deployments: dep()}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewCatalog(models); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestPickFollowsWeights(t *testing.T) {
	p := testProvider(t, "p")
	heavy, light := &Deployment{Provider: p, Model: "heavy", Weight: 3}, &Deployment{Provider: p, Model: "light", Weight: 1}
	c, err := NewCatalog([]*Model{{ID: "m", Deployments: []*Deployment{heavy, light}}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Lookup("m")
	const n = 20000
	got := 0
	for range n {
		if m.Deployments[m.pick(time.Now(), 0)] == heavy {
			got++
		}
	}
	// 3:1 weights: 75 %. The standard deviation over 20000 picks is 0.3 %,
	// so 2 % either side never fails by chance.
	if share := float64(got) / n; share < 0.73 || share > 0.77 {
		t.Fatalf("heavy share = %.3f, want 0.75", share)
	}
}
