package billing

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket layout of the bbolt file. Records are JSON; index buckets map a
// lookup key to a record id.
var (
	bucketMeta        = []byte("meta")         // "schema" -> version
	bucketAccounts    = []byte("accounts")     // account id -> Account
	bucketKeys        = []byte("keys")         // key id -> Key
	bucketKeyHashes   = []byte("key_hashes")   // SHA-256 of secret -> key id
	bucketAccountKeys = []byte("account_keys") // account id + "/" + key id -> nil
	bucketLedger      = []byte("ledger")       // account id -> bucket{seq (8 bytes BE) -> Entry}
	bucketRequests    = []byte("requests")     // request id -> account id, NUL, seq of its charge

	// Users of the dashboard, their sessions and sign-up invites. None of
	// this is ledger data: Audit does not read it.
	bucketUsers        = []byte("users")         // user id -> User
	bucketUserEmails   = []byte("user_emails")   // normalized email -> user id
	bucketPasswords    = []byte("passwords")     // user id -> PHC-encoded argon2id hash, apart from User so it never travels with the record
	bucketSessions     = []byte("sessions")      // SHA-256 of session token -> Session
	bucketUserSessions = []byte("user_sessions") // user id + "/" + hex of session hash -> nil
	bucketInvites      = []byte("invites")       // invite id -> Invite
	bucketInviteHashes = []byte("invite_hashes") // SHA-256 of invite code -> invite id

	schemaKey     = []byte("schema")
	schemaVersion = []byte("1")
)

// How full bbolt fills a page it splits, for the two buckets that grow with
// every request (bbolt's default is half, right for keys that arrive in any
// order). A ledger's keys are sequence numbers, each larger than the last,
// so a split page never receives another row: filled half, it would stay
// half empty for good and the ledger would take twice its size on disk, in
// the page cache and in every apply's writes. Request ids sort by the time
// a request began but are indexed when it settles, a stream's seconds
// later, so the index's last pages still take ids out of order: they keep
// a tenth free for them. (Split full, a page would split again for the
// first late id, into a full page and an almost empty one:
// TestLedgerFillsItsPages finds the index 91% used at 0.9, 46% at 1.0 and
// 51% at bbolt's default.)
const (
	ledgerFill   = 1.0
	requestsFill = 0.9
)

// ledgerOf returns account id's ledger bucket, made if it does not exist,
// set to fill the pages it splits.
func ledgerOf(tx *bolt.Tx, id string) (*bolt.Bucket, error) {
	b, err := tx.Bucket(bucketLedger).CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return nil, err
	}
	b.FillPercent = ledgerFill
	return b, nil
}

// ErrLocked is returned by OpenBolt when another process holds the file.
var ErrLocked = errors.New("database is locked by another process")

// BoltOptions tunes OpenBolt; the zero value is usable.
type BoltOptions struct {
	// Timeout bounds the wait for the file lock. Zero means 2 seconds.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of secrets and ids; nil means crypto/rand.
	Rand io.Reader
	// NoSync skips fsync on commit (bbolt's Options.NoSync), so a commit
	// is no longer durable when Settle or Credit returns. For tests and
	// benchmarks only: a gateway must never set it.
	NoSync bool
	// Password is the argon2id cost of new password hashes; nil means
	// DefaultPasswordParams. Tests use cheap parameters; a gateway should
	// not go below the default.
	Password *PasswordParams
}

// BoltStore is the Store kept in one bbolt file. bbolt holds an exclusive
// lock on the file, so exactly one process may have it open: the running
// gateway. Tools reach the data through the gateway's admin API.
type BoltStore struct {
	db   *bolt.DB
	now  func() time.Time
	rand io.Reader
	gc   *committer

	// jmu guards the settlement journal (journal.go); applyAfter is how
	// long the commit loop lets journaled rows wait for bbolt.
	jmu        sync.Mutex
	journal    *journal
	applyAfter time.Duration

	// password is the cost of new password hashes. hashSlots bounds the
	// hashes computed at once to half the CPUs (at least one), so a burst
	// of log-ins takes at most that many times the memory of one hash and
	// leaves the other CPUs to the API; a hash that waits more than
	// hashWait for a slot fails with ErrBusy. dummyHash is what Login
	// checks a password against when the email is unknown. hashes counts
	// the hashes computed, so tests can see that every log-in costs one.
	password  PasswordParams
	hashSlots chan struct{}
	hashWait  time.Duration
	dummyHash func() (string, error)
	hashes    atomic.Int64
}

// OpenBolt opens (creating if needed) the store at path. If another process
// has the file open it fails after opts.Timeout with an error wrapping
// ErrLocked.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = defaultRand
	}
	password := DefaultPasswordParams
	if opts.Password != nil {
		password = *opts.Password
	}
	if err := password.validate(); err != nil {
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating folder for database %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.Timeout,
		NoSync:  opts.NoSync,
		// The ledger is written far more than it is opened: keep the free
		// page list in memory (rebuilt by a scan at open) instead of
		// rewriting it on every commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening database %s: %w (waited %s); another Caddy is probably running with this storage path: use 'caddy reload' to change its configuration, or point this one at another file", path, ErrLocked, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketAccounts, bucketKeys, bucketKeyHashes, bucketAccountKeys, bucketLedger, bucketRequests,
			bucketUsers, bucketUserEmails, bucketPasswords, bucketSessions, bucketUserSessions, bucketInvites, bucketInviteHashes} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(schemaKey); {
		case v == nil:
			return meta.Put(schemaKey, schemaVersion)
		case !bytes.Equal(v, schemaVersion):
			return fmt.Errorf("schema version %s, this build reads %s", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising database %s: %w", path, err)
	}
	j, err := openJournal(path, !opts.NoSync)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	s := &BoltStore{db: db, now: opts.Now, rand: opts.Rand, password: password, journal: j, applyAfter: applyAfter,
		hashSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)), hashWait: 2 * time.Second}
	if err := s.recoverJournal(); err != nil {
		j.f.Close()
		db.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	// Made once, outside the slots: an ErrBusy must not be kept.
	s.dummyHash = sync.OnceValues(func() (string, error) { return HashPassword("not anyone's password", s.password, s.rand) })
	s.startCommitter()
	return s, nil
}

// Path is the file the store lives in.
func (s *BoltStore) Path() string { return s.db.Path() }

// Close commits the settlements already queued and applies the journal,
// then releases the files. Settle calls after Close fail with ErrClosed.
// When the journal cannot be applied it is kept, and the next OpenBolt
// applies it.
func (s *BoltStore) Close() error {
	s.stopCommitter()
	s.jmu.Lock()
	err := s.applyLocked()
	if cerr := s.journal.f.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	s.jmu.Unlock()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Ping runs an empty read transaction.
func (s *BoltStore) Ping() error {
	return s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts) == nil {
			return errors.New("accounts bucket is missing")
		}
		return nil
	})
}

func (s *BoltStore) CreateAccount(name string, balance Amount) (Account, error) {
	if err := validateAccountName(name); err != nil {
		return Account{}, err
	}
	if balance < 0 {
		return Account{}, fmt.Errorf("%w: opening balance must not be negative", ErrInvalid)
	}
	id, err := newID(s.rand, "acct_")
	if err != nil {
		return Account{}, err
	}
	now := s.now().UTC()
	acct := Account{ID: id, Name: name, State: AccountActive, CreatedAt: now}
	err = s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get([]byte(id)) != nil {
			return fmt.Errorf("account id %s collided; try again", id)
		}
		if balance > 0 {
			if _, err := appendEntry(tx, &acct, Entry{Time: now, Kind: EntryCredit, Amount: balance, Note: "opening balance"}); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketAccounts), id, &acct)
	})
	if err != nil {
		return Account{}, fmt.Errorf("creating account: %w", err)
	}
	return acct, nil
}

func (s *BoltStore) Account(id string) (Account, error) {
	var acct Account
	err := s.view(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketAccounts), id, &acct, "account")
	})
	return acct, err
}

func (s *BoltStore) Accounts() ([]Account, error) {
	var out []Account
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			var a Account
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decoding account %s: %w", k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	sortByCreated(out, func(a Account) (time.Time, string) { return a.CreatedAt, a.ID })
	return out, err
}

func (s *BoltStore) SetAccountState(id string, state AccountState) (Account, error) {
	if !state.Valid() {
		return Account{}, fmt.Errorf("%w: state must be %q or %q", ErrInvalid, AccountActive, AccountDisabled)
	}
	var acct Account
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccounts)
		if err := getJSON(b, id, &acct, "account"); err != nil {
			return err
		}
		acct.State = state
		return putJSON(b, id, &acct)
	})
	return acct, err
}

func (s *BoltStore) Credit(id string, amount Amount, note string) (Account, Entry, error) {
	if amount <= 0 {
		return Account{}, Entry{}, fmt.Errorf("%w: a credit must be a positive amount", ErrInvalid)
	}
	if len(note) > 1000 {
		return Account{}, Entry{}, fmt.Errorf("%w: note is longer than 1000 bytes", ErrInvalid)
	}
	var (
		acct  Account
		entry Entry
	)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccounts)
		if err := getJSON(b, id, &acct, "account"); err != nil {
			return err
		}
		var err error
		entry, err = appendEntry(tx, &acct, Entry{Time: s.now().UTC(), Kind: EntryCredit, Amount: amount, Note: note})
		if err != nil {
			return err
		}
		return putJSON(b, id, &acct)
	})
	return acct, entry, err
}

// appendEntry applies e to acct's balance and appends the row to acct's
// ledger bucket, inside the caller's transaction.
func appendEntry(tx *bolt.Tx, acct *Account, e Entry) (Entry, error) {
	next := acct.Balance + e.Amount
	if (e.Amount > 0 && next < acct.Balance) || (e.Amount < 0 && next > acct.Balance) {
		return Entry{}, fmt.Errorf("%w: balance would overflow", ErrInvalid)
	}
	acct.Balance = next
	b, err := ledgerOf(tx, acct.ID)
	if err != nil {
		return Entry{}, err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return Entry{}, err
	}
	e.Seq, e.AccountID, e.Balance = seq, acct.ID, next
	v, err := json.Marshal(&e)
	if err != nil {
		return Entry{}, err
	}
	return e, b.Put(seqKey(seq), v)
}

func (s *BoltStore) CreateKey(accountID string, spec KeySpec) (Key, string, error) {
	now := s.now().UTC()
	if err := spec.Validate(now); err != nil {
		return Key{}, "", err
	}
	secret, err := NewSecret(s.rand)
	if err != nil {
		return Key{}, "", err
	}
	id, err := newID(s.rand, "key_")
	if err != nil {
		return Key{}, "", err
	}
	hash := HashSecret(secret)
	key := Key{
		ID: id, AccountID: accountID, Name: spec.Name, Last4: Last4(secret), CreatedAt: now,
		Models: spec.Models, RPM: spec.RPM, TPM: spec.TPM,
	}
	if spec.ExpiresAt != nil {
		t := spec.ExpiresAt.UTC()
		key.ExpiresAt = &t
	}
	err = s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get([]byte(accountID)) == nil {
			return fmt.Errorf("account %s: %w", accountID, ErrNotFound)
		}
		hashes := tx.Bucket(bucketKeyHashes)
		if hashes.Get(hash[:]) != nil || tx.Bucket(bucketKeys).Get([]byte(id)) != nil {
			return fmt.Errorf("key collided; try again")
		}
		if err := hashes.Put(hash[:], []byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAccountKeys).Put([]byte(accountID+"/"+id), nil); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketKeys), id, &key)
	})
	if err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	return key, secret, nil
}

func (s *BoltStore) Key(id string) (Key, error) {
	var key Key
	err := s.view(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketKeys), id, &key, "key")
	})
	return key, err
}

func (s *BoltStore) Keys(accountID string) ([]Key, error) {
	var out []Key
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get([]byte(accountID)) == nil {
			return fmt.Errorf("account %s: %w", accountID, ErrNotFound)
		}
		keys := tx.Bucket(bucketKeys)
		prefix := []byte(accountID + "/")
		c := tx.Bucket(bucketAccountKeys).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var key Key
			if err := getJSON(keys, string(k[len(prefix):]), &key, "key"); err != nil {
				return err
			}
			out = append(out, key)
		}
		return nil
	})
	sortByCreated(out, func(k Key) (time.Time, string) { return k.CreatedAt, k.ID })
	return out, err
}

func (s *BoltStore) KeyByHash(h KeyHash) (Key, Account, error) {
	var (
		key  Key
		acct Account
	)
	err := s.view(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeyHashes).Get(h[:])
		if id == nil {
			return fmt.Errorf("key: %w", ErrNotFound)
		}
		if err := getJSON(tx.Bucket(bucketKeys), string(id), &key, "key"); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketAccounts), key.AccountID, &acct, "account")
	})
	return key, acct, err
}

func (s *BoltStore) RevokeKey(id string) (Key, error) {
	var key Key
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if err := getJSON(b, id, &key, "key"); err != nil {
			return err
		}
		if key.RevokedAt != nil {
			return nil
		}
		t := s.now().UTC()
		key.RevokedAt = &t
		return putJSON(b, id, &key)
	})
	return key, err
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func putJSON(b *bolt.Bucket, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", id, err)
	}
	return b.Put([]byte(id), data)
}

func getJSON(b *bolt.Bucket, id string, v any, what string) error {
	data := b.Get([]byte(id))
	if data == nil {
		return fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %s %s: %w", what, id, err)
	}
	return nil
}

var _ Store = (*BoltStore)(nil)
