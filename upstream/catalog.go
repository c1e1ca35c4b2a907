package upstream

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
)

// ProviderType is the wire format a provider speaks.
type ProviderType string

// Provider types.
const (
	TypeOpenAI    ProviderType = "openai"
	TypeAnthropic ProviderType = "anthropic"
	TypeMock      ProviderType = "mock"
)

// Provider is one upstream API: where it is, how to authenticate to it, and
// the HTTP client (one connection pool per provider) that reaches it.
type Provider struct {
	Name string
	Type ProviderType
	// Endpoint is where requests go: base_url + "/chat/completions" for
	// OpenAI-shaped providers, base_url + "/v1/messages" for Anthropic.
	Endpoint string
	// APIKey is the gateway's own key for the provider, sent as a Bearer
	// token; empty sends none (local servers).
	APIKey string
	Client *http.Client
}

// NewProvider checks a provider's settings and returns it.
func NewProvider(name string, typ ProviderType, baseURL, apiKey string, client *http.Client) (*Provider, error) {
	if name == "" {
		return nil, errors.New("provider needs a name")
	}
	switch typ {
	case TypeOpenAI, TypeMock:
	case TypeAnthropic:
		if baseURL == "" {
			baseURL = "https://api.anthropic.com"
		}
	default:
		return nil, fmt.Errorf("provider %s: unknown type %q (want openai, anthropic or mock)", name, typ)
	}
	if typ == TypeMock && baseURL == "" {
		baseURL = "http://mock.invalid/v1"
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %s: base_url %q must be an absolute http or https URL", name, baseURL)
	}
	if client == nil {
		return nil, fmt.Errorf("provider %s: no HTTP client", name)
	}
	base := strings.TrimSuffix(u.String(), "/")
	endpoint := base + "/chat/completions"
	if typ == TypeAnthropic {
		// Anthropic's base is the host; accept it with or without /v1.
		endpoint = strings.TrimSuffix(base, "/v1") + "/v1/messages"
	}
	return &Provider{Name: name, Type: typ, APIKey: apiKey, Client: client, Endpoint: endpoint}, nil
}

// Deployment is a model served by a provider under the provider's own id.
type Deployment struct {
	Provider *Provider
	// Model is the provider's id for the model; clients never see it.
	Model  string
	Weight int

	// Health is the deployment's passive health. The gateway shares one
	// per deployment across config reloads; NewCatalog gives a deployment
	// without one a fresh one.
	Health *Health
}

// Health counts a deployment's consecutive failed requests (connection
// errors, 5xx, rejected credentials); a success resets it. Circuit
// breaking and failover will build on it. Safe for concurrent use.
type Health struct {
	failures atomic.Int64
}

// failingAfter is how many consecutive failures mark a deployment failing.
const failingAfter = 3

// Healthy reports whether the deployment's recent requests succeeded.
func (h *Health) Healthy() bool { return h.failures.Load() < failingAfter }

func (h *Health) observe(ok bool) {
	if ok {
		if h.failures.Load() != 0 {
			h.failures.Store(0)
		}
		return
	}
	h.failures.Add(1)
}

// Healthy reports whether the deployment's recent requests succeeded.
func (d *Deployment) Healthy() bool { return d.Health.Healthy() }

func (d *Deployment) observe(ok bool) { d.Health.observe(ok) }

// Name identifies the deployment in logs and ledger rows: provider/model.
func (d *Deployment) Name() string { return d.Provider.Name + "/" + d.Model }

// Model is a public model: what clients ask for by id.
type Model struct {
	ID          string
	Deployments []*Deployment
	// ContextLength and MaxOutputTokens are 0 when unknown.
	ContextLength   int64
	MaxOutputTokens int64
	// OwnedBy is what /v1/models reports as owned_by.
	OwnedBy string
	// Created is what /v1/models reports as created (Unix seconds).
	Created int64

	totalWeight int
}

// MaxWeight bounds a deployment's weight, so that a model's total weight
// cannot overflow.
const MaxWeight = 1_000_000

// Catalog is the set of public models. It is immutable once built and
// safe for concurrent use.
type Catalog struct {
	models map[string]*Model
	sorted []*Model
}

// NewCatalog indexes models, refusing duplicates and models without
// deployments.
func NewCatalog(models []*Model) (*Catalog, error) {
	c := &Catalog{models: make(map[string]*Model, len(models))}
	for _, m := range models {
		if m.ID == "" {
			return nil, errors.New("a model needs an id")
		}
		if _, dup := c.models[m.ID]; dup {
			return nil, fmt.Errorf("model %s is defined twice", m.ID)
		}
		if len(m.Deployments) == 0 {
			return nil, fmt.Errorf("model %s has no deployment", m.ID)
		}
		m.totalWeight = 0
		for _, d := range m.Deployments {
			if d.Weight <= 0 {
				d.Weight = 1
			}
			if d.Health == nil {
				d.Health = new(Health)
			}
			if d.Weight > MaxWeight {
				return nil, fmt.Errorf("model %s: deploy weight %d is over %d", m.ID, d.Weight, MaxWeight)
			}
			m.totalWeight += d.Weight
		}
		c.models[m.ID] = m
		c.sorted = append(c.sorted, m)
	}
	slices.SortFunc(c.sorted, func(a, b *Model) int { return strings.Compare(a.ID, b.ID) })
	return c, nil
}

// Lookup finds a public model by id.
func (c *Catalog) Lookup(id string) (*Model, bool) {
	m, ok := c.models[id]
	return m, ok
}

// Models lists the public models in id order.
func (c *Catalog) Models() []*Model { return c.sorted }

// Pick chooses a deployment for one request, by weight. Health-aware
// selection and failover will replace this; callers already go through it.
func (m *Model) Pick() *Deployment {
	if len(m.Deployments) == 1 {
		return m.Deployments[0]
	}
	n := rand.IntN(m.totalWeight)
	for _, d := range m.Deployments {
		if n < d.Weight {
			return d
		}
		n -= d.Weight
	}
	return m.Deployments[len(m.Deployments)-1]
}
