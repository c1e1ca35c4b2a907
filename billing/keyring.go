package billing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Reasons Authenticate refuses a well-formed key.
var (
	ErrUnknownKey      = errors.New("unknown API key")
	ErrKeyRevoked      = errors.New("API key revoked")
	ErrKeyExpired      = errors.New("API key expired")
	ErrAccountDisabled = errors.New("account disabled")
)

// Principal is who a request acts for: the key it presented and the state
// of the key's account. Values handed out by a Keyring are shared and must
// not be modified.
type Principal struct {
	Key          Key
	AccountState AccountState
}

// KeyringOptions tunes NewKeyring; the zero value is usable.
type KeyringOptions struct {
	// Size is how many keys the cache holds. Zero means 100,000.
	Size int64
	// Now is the clock for expiry; nil means time.Now.
	Now func() time.Time
}

// Keyring authenticates key secrets through a ristretto cache in front of a
// Store, so a key seen before costs a hash and a map lookup, not a
// transaction.
//
// Revocation must win over the cache on the very next request. Ristretto
// applies sets asynchronously, so deleting an entry can race a concurrent
// miss that is about to re-insert the old state. Instead every entry
// carries the generation it was read in, and anything that can turn a key
// off (revoking it, disabling its account) bumps the generation after the
// store commits: older entries are then ignored and re-read. Revocations
// are rare; re-reading each live key once afterwards is cheap.
type Keyring struct {
	store Store
	cache *ristretto.Cache[uint64, *keyEntry]
	gen   atomic.Uint64
	now   func() time.Time
}

type keyEntry struct {
	hash      KeyHash
	gen       uint64
	principal Principal
}

// NewKeyring returns a Keyring over store. Close it to stop the cache's
// goroutines.
func NewKeyring(store Store, opts KeyringOptions) (*Keyring, error) {
	if opts.Size <= 0 {
		opts.Size = 100_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *keyEntry]{
		NumCounters: opts.Size * 10,
		MaxCost:     opts.Size,
		BufferItems: 64,
		// The key is already the leading 8 bytes of a SHA-256; entries
		// carry the whole hash, which lookups compare.
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating key cache: %w", err)
	}
	return &Keyring{store: store, cache: cache, now: opts.Now}, nil
}

// Authenticate maps a presented secret to its Principal. It fails with
// ErrMalformedKey or ErrKeyChecksum before any lookup, with ErrUnknownKey,
// ErrKeyRevoked, ErrKeyExpired or ErrAccountDisabled for keys that may not
// be used, and with another error if the store cannot be read.
func (k *Keyring) Authenticate(secret string) (*Principal, error) {
	hash, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	gen := k.gen.Load()
	slot := binary.LittleEndian.Uint64(hash[:8])
	e, ok := k.cache.Get(slot)
	if !ok || e.gen != gen || e.hash != hash {
		key, acct, err := k.store.KeyByHash(hash)
		if errors.Is(err, ErrNotFound) {
			return nil, ErrUnknownKey
		}
		if err != nil {
			return nil, fmt.Errorf("looking up API key: %w", err)
		}
		e = &keyEntry{hash: hash, gen: gen, principal: Principal{Key: key, AccountState: acct.State}}
		k.cache.Set(slot, e, 1)
	}
	p := &e.principal
	switch p.Key.State(k.now()) {
	case KeyRevoked:
		return nil, ErrKeyRevoked
	case KeyExpired:
		return nil, ErrKeyExpired
	}
	if p.AccountState != AccountActive {
		return nil, ErrAccountDisabled
	}
	return p, nil
}

// RevokeKey revokes a key in the store and makes every cache forget it
// before returning.
func (k *Keyring) RevokeKey(id string) (Key, error) {
	key, err := k.store.RevokeKey(id)
	if err == nil {
		k.Invalidate()
	}
	return key, err
}

// SetAccountState changes an account's state in the store and makes the
// cache re-read the account's keys before returning.
func (k *Keyring) SetAccountState(id string, state AccountState) (Account, error) {
	acct, err := k.store.SetAccountState(id, state)
	if err == nil {
		k.Invalidate()
	}
	return acct, err
}

// Invalidate makes every cached entry stale.
func (k *Keyring) Invalidate() { k.gen.Add(1) }

// Close stops the cache.
func (k *Keyring) Close() { k.cache.Close() }
