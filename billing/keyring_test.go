package billing

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore counts the store reads Authenticate makes.
type countingStore struct {
	Store
	keyByHash atomic.Int64
}

func (c *countingStore) KeyByHash(h KeyHash) (Key, Account, error) {
	c.keyByHash.Add(1)
	return c.Store.KeyByHash(h)
}

// keyringFixture is a keyring over a counted bolt store sharing one clock.
type keyringFixture struct {
	store   *BoltStore
	counted *countingStore
	ring    *Keyring
	clock   *fakeClock
	acct    Account
	key     Key
	secret  string
}

func newKeyringFixture(t testing.TB, spec KeySpec) *keyringFixture {
	t.Helper()
	s, clock, _ := openTestStore(t)
	counted := &countingStore{Store: s}
	ring, err := NewKeyring(counted, KeyringOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	t.Cleanup(ring.Close)
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	key, secret := mustCreateKey(t, s, acct.ID, spec)
	return &keyringFixture{store: s, counted: counted, ring: ring, clock: clock, acct: acct, key: key, secret: secret}
}

// authenticateMany calls Authenticate n times, fails t on the first error,
// and waits for the cache to apply its sets.
func (f *keyringFixture) authenticateMany(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		if _, err := f.ring.Authenticate(f.secret); err != nil {
			t.Fatalf("Authenticate call %d: %v", i, err)
		}
	}
	f.ring.cache.Wait()
}

func TestAuthenticateSortsSecretsByWhatIsWrongWithThem(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{Name: "ci"})
	wrongChecksum := f.secret[:KeyLen-1] + map[bool]string{true: "1", false: "0"}[f.secret[KeyLen-1] == '0']
	cases := []struct {
		name      string
		secret    string
		wantErr   error
		wantReads int64
	}{
		{"a malformed secret is refused without a store read", "sk_not-a-key", ErrMalformedKey, 0},
		{"an empty secret is refused without a store read", "", ErrMalformedKey, 0},
		{"a secret with a bad checksum is refused without a store read", wrongChecksum, ErrKeyChecksum, 0},
		{"a well-formed secret that was never stored is unknown", newSecretForTest(t), ErrUnknownKey, 1},
		{"a stored secret authenticates", f.secret, nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.counted.keyByHash.Load()
			p, err := f.ring.Authenticate(tc.secret)
			if reads := f.counted.keyByHash.Load() - before; reads != tc.wantReads {
				t.Fatalf("Authenticate made %d store reads, want %d", reads, tc.wantReads)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Authenticate = %v, want %v", err, tc.wantErr)
				}
				if p != nil {
					t.Fatalf("Authenticate returned a principal %+v alongside its error", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.Key.ID != f.key.ID || p.Key.AccountID != f.acct.ID || p.Key.Name != "ci" || p.AccountState != AccountActive {
				t.Fatalf("principal = %+v, want key %s of active account %s", p, f.key.ID, f.acct.ID)
			}
		})
	}
}

func TestAuthenticateRefusesAnExpiredKey(t *testing.T) {
	clockStart := newFakeClock().Now()
	expires := clockStart.Add(time.Hour)
	f := newKeyringFixture(t, KeySpec{ExpiresAt: &expires})
	cases := []struct {
		name    string
		advance time.Duration
		wantErr error
	}{
		{"the key works when created", 0, nil},
		{"the key works a minute before expiry, from the cache", 59 * time.Minute, nil},
		{"the key is expired at its expiry even though it is cached", time.Minute, ErrKeyExpired},
		{"the key stays expired a day later", 24 * time.Hour, ErrKeyExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.clock.Advance(tc.advance)
			_, err := f.ring.Authenticate(f.secret)
			f.ring.cache.Wait()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Authenticate at %v = %v, want %v", f.clock.Now(), err, tc.wantErr)
			}
		})
	}
	if reads := f.counted.keyByHash.Load(); reads != 1 {
		t.Fatalf("expiry was decided with %d store reads, want 1 (the clock, not the store, expires keys)", reads)
	}
}

func TestRevokeThroughTheKeyringWinsOverTheCache(t *testing.T) {
	cases := []struct {
		name string
		warm func(t *testing.T, f *keyringFixture)
	}{
		{"a key authenticated many times and settled in the cache is revoked on the next call", func(t *testing.T, f *keyringFixture) {
			f.authenticateMany(t, 500)
			before := f.counted.keyByHash.Load()
			f.authenticateMany(t, 10)
			if f.counted.keyByHash.Load() != before {
				t.Fatal("the key is not served from the cache before the revocation")
			}
		}},
		{"a key whose cache set may still be in flight is revoked on the next call", func(t *testing.T, f *keyringFixture) {
			if _, err := f.ring.Authenticate(f.secret); err != nil {
				t.Fatal(err)
			}
		}},
		{"a key authenticated a few times without waiting is revoked on the next call", func(t *testing.T, f *keyringFixture) {
			for range 5 {
				if _, err := f.ring.Authenticate(f.secret); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newKeyringFixture(t, KeySpec{})
			other, otherSecret := mustCreateKey(t, f.store, f.acct.ID, KeySpec{})
			if _, err := f.ring.Authenticate(otherSecret); err != nil {
				t.Fatal(err)
			}
			tc.warm(t, f)
			revoked, err := f.ring.RevokeKey(f.key.ID)
			if err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
			if revoked.RevokedAt == nil {
				t.Fatalf("RevokeKey returned %+v without RevokedAt", revoked)
			}
			if _, err := f.ring.Authenticate(f.secret); !errors.Is(err, ErrKeyRevoked) {
				t.Fatalf("the first Authenticate after RevokeKey = %v, want ErrKeyRevoked", err)
			}
			// Let any set issued before the revocation land, then check
			// that it did not resurrect the key.
			f.ring.cache.Wait()
			for i := range 100 {
				if _, err := f.ring.Authenticate(f.secret); !errors.Is(err, ErrKeyRevoked) {
					t.Fatalf("Authenticate call %d after RevokeKey = %v, want ErrKeyRevoked", i, err)
				}
			}
			p, err := f.ring.Authenticate(otherSecret)
			if err != nil || p.Key.ID != other.ID {
				t.Fatalf("the account's other key = %+v, %v; want it to still work", p, err)
			}
		})
	}
}

func TestRevokeKeyThroughTheKeyringReportsUnknownKeys(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{})
	f.authenticateMany(t, 3)
	if _, err := f.ring.RevokeKey("key_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeKey = %v, want ErrNotFound", err)
	}
	if _, err := f.ring.Authenticate(f.secret); err != nil {
		t.Fatalf("a failed revocation broke an unrelated key: %v", err)
	}
}

func TestRevokeInTheStoreAloneNeedsInvalidate(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{})
	f.authenticateMany(t, 10)
	if _, err := f.store.RevokeKey(f.key.ID); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name       string
		invalidate bool
		wantErr    error
	}{
		{"a revocation behind the keyring's back is not seen while cached", false, nil},
		{"after Invalidate the revocation is seen", true, ErrKeyRevoked},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.invalidate {
				f.ring.Invalidate()
			}
			if _, err := f.ring.Authenticate(f.secret); !errors.Is(err, st.wantErr) {
				t.Fatalf("Authenticate = %v, want %v", err, st.wantErr)
			}
		})
	}
}

func TestDisablingTheAccountThroughTheKeyring(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{})
	f.authenticateMany(t, 100)
	steps := []struct {
		name    string
		state   AccountState
		wantErr error
	}{
		{"a disabled account's key is refused on the next call", AccountDisabled, ErrAccountDisabled},
		{"a re-enabled account's key works on the next call", AccountActive, nil},
		{"disabling again is seen again", AccountDisabled, ErrAccountDisabled},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			// Make sure the previous state is settled in the cache.
			for range 20 {
				_, _ = f.ring.Authenticate(f.secret)
			}
			f.ring.cache.Wait()
			acct, err := f.ring.SetAccountState(f.acct.ID, st.state)
			if err != nil || acct.State != st.state {
				t.Fatalf("SetAccountState = %+v, %v", acct, err)
			}
			for i := range 50 {
				p, err := f.ring.Authenticate(f.secret)
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("Authenticate call %d = %v, want %v", i, err, st.wantErr)
				}
				if st.wantErr == nil && p.AccountState != AccountActive {
					t.Fatalf("principal account state = %q", p.AccountState)
				}
				if i == 10 {
					f.ring.cache.Wait()
				}
			}
		})
	}
	t.Run("an invalid state is refused and changes nothing", func(t *testing.T) {
		if _, err := f.ring.SetAccountState(f.acct.ID, "frozen"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("SetAccountState = %v, want ErrInvalid", err)
		}
		if _, err := f.ring.Authenticate(f.secret); !errors.Is(err, ErrAccountDisabled) {
			t.Fatalf("Authenticate = %v, want ErrAccountDisabled", err)
		}
	})
}

func TestCachedAuthenticationDoesNotReadTheStore(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{})
	steps := []struct {
		name      string
		do        func(t *testing.T)
		wantTotal int64
	}{
		{"the first call reads the store once", func(t *testing.T) {
			if _, err := f.ring.Authenticate(f.secret); err != nil {
				t.Fatal(err)
			}
			f.ring.cache.Wait()
		}, 1},
		{"a thousand cached calls read nothing", func(t *testing.T) {
			f.authenticateMany(t, 1000)
		}, 1},
		{"the first call after Invalidate reads the store exactly once more", func(t *testing.T) {
			f.ring.Invalidate()
			if _, err := f.ring.Authenticate(f.secret); err != nil {
				t.Fatal(err)
			}
			f.ring.cache.Wait()
		}, 2},
		{"a thousand calls after that read nothing again", func(t *testing.T) {
			f.authenticateMany(t, 1000)
		}, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			if got := f.counted.keyByHash.Load(); got != st.wantTotal {
				t.Fatalf("KeyByHash was called %d times in all, want %d", got, st.wantTotal)
			}
		})
	}
}

func TestUnknownKeysAreNeverCached(t *testing.T) {
	f := newKeyringFixture(t, KeySpec{})
	unknown := newSecretForTest(t)
	for i := range 5 {
		if _, err := f.ring.Authenticate(unknown); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("call %d: %v, want ErrUnknownKey", i, err)
		}
		f.ring.cache.Wait()
	}
	if got := f.counted.keyByHash.Load(); got != 5 {
		t.Fatalf("five unknown-key calls made %d store reads, want 5", got)
	}
}

func TestRevocationIsSeenByEveryGoroutineAfterRevokeKeyReturns(t *testing.T) {
	// storm says whether a goroutine keeps calling Invalidate, which forces
	// cache misses so that store reads, not only cache hits, race the
	// revocation.
	type storm int
	const (
		noStorm          storm = iota // the key is settled in the cache
		stormUntilRevoke              // misses race up to the revocation
		stormThroughout               // misses race the revocation itself
	)
	cases := []struct {
		name  string
		storm storm
	}{
		{"every goroutine sees the revocation of a key settled in the cache", noStorm},
		{"every goroutine sees the revocation when misses raced up to it", stormUntilRevoke},
		{"every goroutine sees the revocation when misses race it throughout", stormThroughout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newKeyringFixture(t, KeySpec{})
			_, survivor := mustCreateKey(t, f.store, f.acct.ID, KeySpec{})
			f.authenticateMany(t, 10)

			const workers = 8
			const callsAfterRevoke = 2000
			var (
				revoked   atomic.Bool // set only after RevokeKey has returned
				stop      atomic.Bool
				successes atomic.Int64
				running   atomic.Int64
				wg        sync.WaitGroup
				errs      = make(chan error, workers)
			)
			for w := range workers {
				wg.Add(1)
				running.Add(1)
				go func() {
					defer wg.Done()
					defer running.Add(-1)
					after := 0
					for after < callsAfterRevoke {
						started := revoked.Load()
						_, err := f.ring.Authenticate(f.secret)
						switch {
						case started && !errors.Is(err, ErrKeyRevoked):
							errs <- fmt.Errorf("worker %d: call %d after RevokeKey returned got %v, want ErrKeyRevoked", w, after, err)
							return
						case !started && err != nil && !errors.Is(err, ErrKeyRevoked):
							errs <- fmt.Errorf("worker %d: unexpected error before the revocation: %v", w, err)
							return
						case err == nil:
							successes.Add(1)
						}
						if started {
							after++
						}
						// The other key must keep working throughout.
						if w%2 == 0 {
							if _, err := f.ring.Authenticate(survivor); err != nil {
								errs <- fmt.Errorf("worker %d: the unrevoked key failed: %v", w, err)
								return
							}
						}
					}
				}()
			}
			var invalidator sync.WaitGroup
			stopStorm := func() {
				stop.Store(true)
				invalidator.Wait()
			}
			if tc.storm != noStorm {
				invalidator.Add(1)
				go func() {
					defer invalidator.Done()
					for !stop.Load() {
						f.ring.Invalidate()
						runtime.Gosched()
					}
				}()
			}
			// Revoke only once the workers are busy authenticating
			// successfully (or one has failed, so the test cannot hang).
			for successes.Load() < 2000 && running.Load() == workers {
				runtime.Gosched()
			}
			if tc.storm == stormUntilRevoke {
				stopStorm()
			}
			if _, err := f.ring.RevokeKey(f.key.ID); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
			revoked.Store(true)
			wg.Wait()
			stopStorm()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	f := newKeyringFixture(b, KeySpec{})
	f.authenticateMany(b, 10)
	f.counted.keyByHash.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := f.ring.Authenticate(f.secret); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reads := f.counted.keyByHash.Load()
	b.ReportMetric(float64(reads)/float64(b.N), "store-reads/op")
	if reads != 0 {
		b.Fatalf("cached authentication read the store %d times", reads)
	}
}

func BenchmarkAuthenticateMiss(b *testing.B) {
	f := newKeyringFixture(b, KeySpec{})
	f.authenticateMany(b, 10)
	f.counted.keyByHash.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		f.ring.Invalidate()
		if _, err := f.ring.Authenticate(f.secret); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reads := f.counted.keyByHash.Load()
	b.ReportMetric(float64(reads)/float64(b.N), "store-reads/op")
	if reads != int64(b.N) {
		b.Fatalf("%d misses read the store %d times", b.N, reads)
	}
}
