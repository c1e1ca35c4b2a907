package upstream

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
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
	// ResponseHeaderTimeout bounds the wait for the response headers once
	// a request is sent; IdleTimeout, the wait between reads of the answer
	// after them (between stream events). Zero means the defaults,
	// DefaultResponseHeaderTimeout and DefaultIdleTimeout.
	ResponseHeaderTimeout time.Duration
	IdleTimeout           time.Duration
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
	// APIKey, when set, replaces the provider's key for this deployment:
	// deployments of one provider may differ only by key.
	APIKey string

	// Health is the deployment's passive health. The gateway shares one
	// per deployment across config reloads; NewCatalog gives a deployment
	// without one a fresh one.
	Health *Health

	name string
}

// Name identifies the deployment in logs, ledger rows and the admin API:
// provider/model, with #2, #3, ... for further deployments of one model on
// the same provider model (which differ by key).
func (d *Deployment) Name() string {
	if d.name != "" {
		return d.name
	}
	return d.Provider.Name + "/" + d.Model
}

// key is the key sent to the provider for this deployment.
func (d *Deployment) key() string {
	if d.APIKey != "" {
		return d.APIKey
	}
	return d.Provider.APIKey
}

// Model is a public model: what clients ask for by id.
type Model struct {
	ID          string
	Deployments []*Deployment
	// ContextLength and MaxOutputTokens are 0 when unknown.
	ContextLength   int64
	MaxOutputTokens int64
	// ImageTokens is the most prompt tokens one image can
	// cost on this model; 0 when not configured (the gateway's default
	// applies).
	ImageTokens int64
	// OwnedBy is what /v1/models reports as owned_by.
	OwnedBy string
	// Created is what /v1/models reports as created (Unix seconds).
	Created int64

	totalWeight int
}

// MaxDeployments bounds a model's deployments.
const MaxDeployments = 64

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
		if len(m.Deployments) > MaxDeployments {
			return nil, fmt.Errorf("model %s has %d deployments; at most %d", m.ID, len(m.Deployments), MaxDeployments)
		}
		m.totalWeight = 0
		names := make(map[string]int, len(m.Deployments))
		for _, d := range m.Deployments {
			base := d.Provider.Name + "/" + d.Model
			names[base]++
			d.name = base
			if n := names[base]; n > 1 {
				d.name = base + "#" + strconv.Itoa(n)
			}
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

// pick chooses a deployment for one attempt at a request, among those not
// in tried (a set of indexes into m.Deployments): the probe of a half-open
// circuit first, so that a recovered deployment comes back at once; else
// the closed deployment with the lowest score
//
//	latency estimate × (requests in flight + E) / weight
//
// where E is drawn from the exponential distribution with mean 1. With
// nothing in flight and equal latencies that picks deployment i with
// probability weight_i / Σ weights, exactly; requests in flight and
// latency push traffic away from a busy or slow deployment in proportion.
// A deployment never measured counts as fast as the fastest one measured.
// It returns -1 when no deployment is available.
func (m *Model) pick(now time.Time, tried uint64) int {
	i, _ := m.choose(now, tried)
	return i
}

// choose is pick that also returns the probe's ticket when the deployment
// chosen is a half-open circuit's probe (0 otherwise).
func (m *Model) choose(now time.Time, tried uint64) (int, uint64) {
	var fastest int64
	for i, d := range m.Deployments {
		if tried&(1<<i) != 0 {
			continue
		}
		ok, probe := d.Health.available(now)
		if ok && probe {
			if ticket, claimed := d.Health.claimProbe(now); claimed {
				return i, ticket
			}
			continue
		}
		if l := d.Health.latency.Load(); ok && !probe && l > 0 && (fastest == 0 || l < fastest) {
			fastest = l
		}
	}
	if fastest == 0 {
		fastest = 1
	}
	best, bestScore := -1, 0.0
	for i, d := range m.Deployments {
		if tried&(1<<i) != 0 || State(d.Health.state.Load()) != StateClosed {
			continue
		}
		l := d.Health.latency.Load()
		if l == 0 {
			l = fastest
		}
		score := float64(l) * (float64(d.Health.inflight.Load()) + rand.ExpFloat64()) / float64(d.Weight)
		if best < 0 || score < bestScore {
			best, bestScore = i, score
		}
	}
	return best, 0
}

// reopens is when the first open circuit among m's deployments lets its
// probe through (zero if none is open), and whether every deployment is
// open because its provider answered 429.
func (m *Model) reopens() (at time.Time, limited bool) {
	var first int64
	limited = true
	for _, d := range m.Deployments {
		if State(d.Health.state.Load()) != StateOpen {
			limited = false
			continue
		}
		if u := d.Health.until.Load(); first == 0 || u < first {
			first = u
		}
		if d.Health.Snapshot(time.Time{}).Reason != "rate_limited" {
			limited = false
		}
	}
	if first == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, first), limited
}
