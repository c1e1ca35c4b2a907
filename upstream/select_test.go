package upstream

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// weightedModel is a model "m" with one deployment per weight, all on
// provider p, with provider model ids d0, d1, ...
func weightedModel(t *testing.T, weights ...int) *Model {
	t.Helper()
	p := testProvider(t, "p")
	deps := make([]*Deployment, len(weights))
	for i, w := range weights {
		deps[i] = &Deployment{Provider: p, Model: fmt.Sprintf("d%d", i), Weight: w}
	}
	c, err := NewCatalog([]*Model{{ID: "m", Deployments: deps}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Lookup("m")
	return m
}

// shares picks n times at now with nothing tried and returns each
// deployment's share of the picks.
func shares(t *testing.T, m *Model, now time.Time, n int) []float64 {
	t.Helper()
	counts := make([]int, len(m.Deployments))
	for range n {
		i := m.pick(now, 0)
		if i < 0 {
			t.Fatal("no deployment picked")
		}
		counts[i]++
	}
	out := make([]float64, len(counts))
	for i, c := range counts {
		out[i] = float64(c) / float64(n)
	}
	return out
}

func wantShare(t *testing.T, what string, got, want, tolerance float64) {
	t.Helper()
	if math.Abs(got-want) > tolerance {
		t.Fatalf("%s: share %.4f, want %.4f ± %.3f", what, got, want, tolerance)
	}
}

func TestPickSharesFollowWeights(t *testing.T) {
	// With equal latencies and nothing in flight, deployment i wins with
	// probability w_i / Σw. Over 20000 picks one standard deviation is at
	// most 0.35 %, so ±2 % never fails by chance.
	for _, weights := range [][]int{{3, 1}, {1, 2, 5}, {1, 1, 1, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			m := weightedModel(t, weights...)
			total := 0
			for _, w := range weights {
				total += w
			}
			got := shares(t, m, epoch, 20000)
			for i, w := range weights {
				wantShare(t, m.Deployments[i].Name(), got[i], float64(w)/float64(total), 0.02)
			}
		})
	}
	t.Run("measured equal latencies do not change the shares", func(t *testing.T) {
		m := weightedModel(t, 3, 1)
		for _, d := range m.Deployments {
			succeedOnce(d.Health, epoch, &Breaker{}, 30*time.Millisecond)
		}
		wantShare(t, "heavy", shares(t, m, epoch, 20000)[0], 0.75, 0.02)
	})
}

func TestPickAvoidsRequestsInFlight(t *testing.T) {
	// Equal weights and latencies, k requests in flight on A, none on B: A
	// wins when k + E_A < E_B, with probability e^-k / 2.
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d in flight", k), func(t *testing.T) {
			m := weightedModel(t, 1, 1)
			for range k {
				m.Deployments[0].Health.begin()
			}
			want := math.Exp(-float64(k)) / 2
			got := shares(t, m, epoch, 20000)[0]
			wantShare(t, "busy deployment", got, want, 0.01)
			if got >= 0.2 {
				t.Fatalf("busy deployment share %.3f", got)
			}
			if m.Deployments[0].Health.InFlight() != int64(k) {
				t.Fatal("pick changed the in-flight count")
			}
		})
	}
}

func TestPickAvoidsASlowDeployment(t *testing.T) {
	t.Run("ten times slower gets 1/11", func(t *testing.T) {
		m := weightedModel(t, 1, 1)
		succeedOnce(m.Deployments[0].Health, epoch, &Breaker{}, 10*time.Millisecond)
		succeedOnce(m.Deployments[1].Health, epoch, &Breaker{}, 100*time.Millisecond)
		// Slow wins when 100·E_slow < 10·E_fast: rates 1/100 and 1/10,
		// probability (1/100) / (1/100 + 1/10) = 1/11 ≈ 9.1 %.
		got := shares(t, m, epoch, 20000)[1]
		wantShare(t, "slow deployment", got, 1.0/11, 0.01)
	})
	t.Run("a deployment never measured counts as the fastest", func(t *testing.T) {
		m := weightedModel(t, 1, 1)
		succeedOnce(m.Deployments[0].Health, epoch, &Breaker{}, 10*time.Millisecond)
		wantShare(t, "unmeasured deployment", shares(t, m, epoch, 20000)[1], 0.5, 0.02)
	})
	t.Run("the fastest is taken among closed deployments only", func(t *testing.T) {
		m := weightedModel(t, 1, 1, 1)
		succeedOnce(m.Deployments[0].Health, epoch, &Breaker{}, 1*time.Millisecond)
		succeedOnce(m.Deployments[1].Health, epoch, &Breaker{}, 100*time.Millisecond)
		for range 5 {
			failOnce(m.Deployments[0].Health, epoch, &Breaker{})
		}
		// With the 1ms deployment open, the unmeasured one counts as
		// 100ms like the other: an even split.
		got := shares(t, m, at(time.Second), 20000)
		wantShare(t, "open deployment", got[0], 0, 0)
		wantShare(t, "measured deployment", got[1], 0.5, 0.02)
	})
}

func TestPickOpenCircuit(t *testing.T) {
	m := weightedModel(t, 1, 1)
	a := m.Deployments[0].Health
	for range 5 {
		failOnce(a, epoch, &Breaker{})
	}
	until := at(30 * time.Second)
	for i := range 1000 {
		if got := m.pick(until.Add(-time.Millisecond), 0); got != 1 {
			t.Fatalf("pick %d during the cool-down: %d", i, got)
		}
	}
	got, ticket := m.choose(until, 0)
	if got != 0 || ticket == 0 {
		t.Fatalf("first pick at the end of the cool-down: %d (ticket %d), want the probe (0)", got, ticket)
	}
	a.begin()
	for i := range 1000 {
		if got := m.pick(until.Add(time.Duration(i)*time.Second), 0); got != 1 {
			t.Fatalf("pick %d with the probe in flight: %d", i, got)
		}
	}
	a.endProbe(ticket, until, verdictOK, 20*time.Millisecond, 0, "", &Breaker{})
	if s := a.Snapshot(until); s.State != StateClosed {
		t.Fatalf("after the probe: %s", s.State)
	}
	wantShare(t, "recovered deployment", shares(t, m, until, 20000)[0], 0.5, 0.02)

	t.Run("a failed probe shuts it out again", func(t *testing.T) {
		for range 5 {
			failOnce(a, until, &Breaker{})
		}
		reopen := until.Add(30 * time.Second)
		got, ticket := m.choose(reopen, 0)
		if got != 0 || ticket == 0 {
			t.Fatalf("pick at the end of the cool-down: %d (ticket %d)", got, ticket)
		}
		probeOnce(a, ticket, reopen, verdictFailed, &Breaker{})
		for i := range 1000 {
			if got := m.pick(reopen.Add(time.Minute-time.Millisecond), 0); got != 1 {
				t.Fatalf("pick %d after the failed probe: %d", i, got)
			}
		}
		if got := m.pick(reopen.Add(time.Minute), 0); got != 0 {
			t.Fatalf("pick at the end of the doubled cool-down: %d", got)
		}
	})
}

func TestPickTried(t *testing.T) {
	m := weightedModel(t, 1, 1, 1)
	for range 1000 {
		if got := m.pick(epoch, 0b001); got == 0 {
			t.Fatal("picked a tried deployment")
		}
		if got := m.pick(epoch, 0b011); got != 2 {
			t.Fatalf("pick with 0 and 1 tried: %d", got)
		}
	}
	if got := m.pick(epoch, 0b111); got != -1 {
		t.Fatalf("pick with all tried: %d", got)
	}

	t.Run("a tried deployment's probe is not claimed", func(t *testing.T) {
		h := m.Deployments[0].Health
		for range 5 {
			failOnce(h, epoch, &Breaker{})
		}
		if got := m.pick(at(time.Minute), 0b001); got == 0 {
			t.Fatal("picked the tried deployment")
		}
		if st := State(h.state.Load()); st != StateOpen {
			t.Fatalf("state %s: its probe was claimed", st)
		}
		if got := m.pick(at(time.Minute), 0b110); got != 0 {
			t.Fatalf("pick: %d, want the probe", got)
		}
	})
	t.Run("nothing is picked when every circuit is open", func(t *testing.T) {
		m := weightedModel(t, 1, 1, 1)
		for _, d := range m.Deployments {
			for range 5 {
				failOnce(d.Health, epoch, &Breaker{})
			}
		}
		if got := m.pick(at(time.Second), 0); got != -1 {
			t.Fatalf("pick with every circuit open: %d", got)
		}
	})
	t.Run("the last of 64 deployments", func(t *testing.T) {
		weights := make([]int, MaxDeployments)
		for i := range weights {
			weights[i] = 1
		}
		m := weightedModel(t, weights...)
		if got := m.pick(epoch, math.MaxUint64>>1); got != 63 {
			t.Fatalf("pick with all but the 64th tried: %d", got)
		}
		if got := m.pick(epoch, math.MaxUint64); got != -1 {
			t.Fatalf("pick with all 64 tried: %d", got)
		}
	})
}

func TestDeploymentNames(t *testing.T) {
	p, q := testProvider(t, "p"), testProvider(t, "q")
	deps := []*Deployment{
		{Provider: p, Model: "m", APIKey: "k1"},
		{Provider: p, Model: "m", APIKey: "k2"},
		{Provider: q, Model: "m"},
		{Provider: p, Model: "other"},
		{Provider: p, Model: "m", APIKey: "k3"},
	}
	if got := deps[1].Name(); got != "p/m" {
		t.Fatalf("name before the catalog: %q", got)
	}
	if _, err := NewCatalog([]*Model{{ID: "public", Deployments: deps}}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"p/m", "p/m#2", "q/m", "p/other", "p/m#3"} {
		if got := deps[i].Name(); got != want {
			t.Fatalf("deployment %d: name %q, want %q", i, got, want)
		}
		if deps[i].Health == nil || deps[i].Weight != 1 {
			t.Fatalf("deployment %d: health %v weight %d", i, deps[i].Health, deps[i].Weight)
		}
	}
	if deps[1].key() != "k2" || deps[2].key() != "" {
		t.Fatalf("keys %q %q", deps[1].key(), deps[2].key())
	}
}

func TestNewCatalogBoundsDeployments(t *testing.T) {
	p := testProvider(t, "p")
	deps := func(n int) []*Deployment {
		out := make([]*Deployment, n)
		for i := range out {
			out[i] = &Deployment{Provider: p, Model: "m"}
		}
		return out
	}
	if _, err := NewCatalog([]*Model{{ID: "m", Deployments: deps(MaxDeployments)}}); err != nil {
		t.Fatalf("%d deployments: %v", MaxDeployments, err)
	}
	_, err := NewCatalog([]*Model{{ID: "m", Deployments: deps(MaxDeployments + 1)}})
	if err == nil || !strings.Contains(err.Error(), "65 deployments; at most 64") {
		t.Fatalf("%d deployments: err = %v", MaxDeployments+1, err)
	}
}
