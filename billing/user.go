package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Errors of users and their log-ins; callers branch on them with errors.Is.
var (
	ErrEmailTaken = errors.New("email already registered")
	// ErrBadCredentials is the one answer to an unknown email and to a
	// wrong password alike, so a log-in form does not tell which emails
	// are registered.
	ErrBadCredentials = errors.New("wrong email or password")
	ErrUserDisabled   = errors.New("user disabled")
)

// UserState says whether a user may log in.
type UserState string

// User states.
const (
	UserActive   UserState = "active"
	UserDisabled UserState = "disabled"
)

// Valid reports whether s is a known state.
func (s UserState) Valid() bool { return s == UserActive || s == UserDisabled }

// User is a person who logs in to the dashboard to manage one account; an
// account may have several users. The record never holds the password
// hash: the store keeps that apart, so listing or showing users cannot
// leak it.
type User struct {
	ID          string     `json:"id"`
	Email       string     `json:"email"`
	AccountID   string     `json:"account_id"`
	State       UserState  `json:"state"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at,omitempty"`
}

// maxEmailLen is the longest address SMTP can carry (RFC 5321's path limit
// less the angle brackets).
const maxEmailLen = 254

// NormalizeEmail returns the form an email is stored and looked up in:
// without surrounding space, lower-case. It refuses, with an error
// wrapping ErrInvalid, what does not look like local@domain: not exactly
// one @, an empty side, spaces, control or invisible formatting characters,
// invalid UTF-8, or more than 254 bytes. It does not check that the domain
// exists or receives mail.
func NormalizeEmail(s string) (string, error) {
	// Checked first: ToLower would turn invalid bytes into U+FFFD.
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: email is not valid UTF-8", ErrInvalid)
	}
	e := strings.ToLower(strings.TrimSpace(s))
	switch {
	case e == "":
		return "", fmt.Errorf("%w: email is required", ErrInvalid)
	case len(e) > maxEmailLen:
		return "", fmt.Errorf("%w: email is longer than %d bytes", ErrInvalid, maxEmailLen)
	}
	local, domain, _ := strings.Cut(e, "@")
	if local == "" || domain == "" || strings.Contains(domain, "@") {
		return "", fmt.Errorf("%w: email must look like name@example.com", ErrInvalid)
	}
	for _, r := range e {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return "", fmt.Errorf("%w: email must not contain spaces or control characters", ErrInvalid)
		}
	}
	return e, nil
}

// Password lengths ValidatePassword accepts, in bytes. The upper bound
// keeps a log-in from feeding megabytes to the hash.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// ValidatePassword refuses, with an error wrapping ErrInvalid, a password
// shorter than MinPasswordLen or longer than MaxPasswordLen bytes.
func ValidatePassword(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return fmt.Errorf("%w: password is shorter than %d bytes", ErrInvalid, MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("%w: password is longer than %d bytes", ErrInvalid, MaxPasswordLen)
	}
	return nil
}

// accountName is the name of a user's account: the email, cut at a
// character boundary to the 200 bytes an account name may have.
func accountName(email string) string {
	if len(email) <= 200 {
		return email
	}
	cut := 200
	for cut > 0 && !utf8.RuneStart(email[cut]) {
		cut--
	}
	return email[:cut]
}

// ErrBusy is returned when every password-hashing slot stayed taken for
// two seconds: the caller should ask the client to retry shortly.
var ErrBusy = errors.New("too many password checks at once; try again shortly")

// hashSlot takes a hashing slot, waiting at most s.hashWait; release
// gives it back.
func (s *BoltStore) hashSlot() (release func(), err error) {
	select {
	case s.hashSlots <- struct{}{}:
	default:
		t := time.NewTimer(s.hashWait)
		defer t.Stop()
		select {
		case s.hashSlots <- struct{}{}:
		case <-t.C:
			return nil, ErrBusy
		}
	}
	return func() { <-s.hashSlots }, nil
}

// hashPassword hashes with the store's parameters once a hashing slot is
// free.
func (s *BoltStore) hashPassword(pw string) (string, error) {
	release, err := s.hashSlot()
	if err != nil {
		return "", err
	}
	defer release()
	s.hashes.Add(1)
	return HashPassword(pw, s.password, s.rand)
}

// checkPassword checks pw against an encoded hash once a hashing slot is
// free.
func (s *BoltStore) checkPassword(encoded, pw string) (bool, error) {
	release, err := s.hashSlot()
	if err != nil {
		return false, err
	}
	defer release()
	s.hashes.Add(1)
	return CheckPassword(encoded, pw)
}

// CreateUser adds a user and the account it owns, named after the email,
// in one transaction. A positive balance is the account's opening credit,
// as with CreateAccount. A non-empty invite is consumed in the same
// transaction (ErrInviteInvalid if it is unknown, used, revoked or
// expired); the invite is checked before the email, so without a good
// invite nobody learns whether an email is registered. An empty invite
// creates the user without one: whether sign-up needs an invite is the
// caller's policy.
//
// An invite bound to an account makes the user one more manager of that
// account, which is returned as it stands: no account is created and
// balance is ignored, so nothing is credited. An account may have any
// number of users.
//
// The password is hashed before the transaction, so writers do not wait
// for it. On any error nothing is created.
func (s *BoltStore) CreateUser(email, password string, balance Amount, invite string) (User, Account, error) {
	addr, err := NormalizeEmail(email)
	if err != nil {
		return User{}, Account{}, err
	}
	if err := ValidatePassword(password); err != nil {
		return User{}, Account{}, err
	}
	if balance < 0 {
		return User{}, Account{}, fmt.Errorf("%w: opening balance must not be negative", ErrInvalid)
	}
	userID, err := newID(s.rand, "user_")
	if err != nil {
		return User{}, Account{}, err
	}
	// Drawn even when the invite turns out bound to an account: the
	// transaction is no place for I/O that can fail.
	acctID, err := newID(s.rand, "acct_")
	if err != nil {
		return User{}, Account{}, err
	}
	if invite != "" {
		// A code that cannot work costs no hash. (The transaction checks
		// it again.)
		err := s.view(func(tx *bolt.Tx) error {
			_, err := findInvite(tx, invite, s.now().UTC())
			return err
		})
		if err != nil {
			return User{}, Account{}, err
		}
	}
	encoded, err := s.hashPassword(password)
	if err != nil {
		return User{}, Account{}, err
	}
	now := s.now().UTC()
	var (
		user User
		acct Account
	)
	err = s.update(func(tx *bolt.Tx) error {
		var inv Invite
		if invite != "" {
			var err error
			if inv, err = useInvite(tx, invite, userID, now); err != nil {
				return err
			}
		}
		emails, users, accounts := tx.Bucket(bucketUserEmails), tx.Bucket(bucketUsers), tx.Bucket(bucketAccounts)
		if emails.Get([]byte(addr)) != nil {
			return ErrEmailTaken
		}
		if users.Get([]byte(userID)) != nil {
			return fmt.Errorf("user id collided; try again")
		}
		if inv.AccountID != "" {
			if err := getJSON(accounts, inv.AccountID, &acct, "account"); err != nil {
				return fmt.Errorf("invite %s: %w", inv.ID, err)
			}
		} else {
			if accounts.Get([]byte(acctID)) != nil {
				return fmt.Errorf("account id collided; try again")
			}
			acct = Account{ID: acctID, Name: accountName(addr), State: AccountActive, CreatedAt: now}
			if balance > 0 {
				if _, err := appendEntry(tx, &acct, Entry{Time: now, Kind: EntryCredit, Amount: balance, Note: "opening balance"}); err != nil {
					return err
				}
			}
			if err := putJSON(accounts, acctID, &acct); err != nil {
				return err
			}
		}
		user = User{ID: userID, Email: addr, AccountID: acct.ID, State: UserActive, CreatedAt: now}
		if err := putJSON(users, userID, &user); err != nil {
			return err
		}
		if err := emails.Put([]byte(addr), []byte(userID)); err != nil {
			return err
		}
		return tx.Bucket(bucketPasswords).Put([]byte(userID), []byte(encoded))
	})
	if err != nil {
		return User{}, Account{}, fmt.Errorf("creating user: %w", err)
	}
	return user, acct, nil
}

// Login checks an email and password and records the log-in time. An
// unknown email and a wrong password are both ErrBadCredentials, and an
// unknown email still costs one password hash, so neither the answer nor
// its timing tells them apart. A disabled user with the right password
// gets ErrUserDisabled. Input that no user can have (a malformed email, a
// password of the wrong length) is ErrBadCredentials at once.
func (s *BoltStore) Login(email, password string) (User, error) {
	addr, err := NormalizeEmail(email)
	if err != nil || ValidatePassword(password) != nil {
		return User{}, ErrBadCredentials
	}
	var (
		user    User
		encoded string
	)
	err = s.view(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketUserEmails).Get([]byte(addr))
		if id == nil {
			return nil
		}
		if err := getJSON(tx.Bucket(bucketUsers), string(id), &user, "user"); err != nil {
			return err
		}
		hash := tx.Bucket(bucketPasswords).Get(id)
		if hash == nil {
			return fmt.Errorf("user %s has no password hash", id)
		}
		encoded = string(hash) // copied: bbolt's bytes die with the transaction
		return nil
	})
	if err != nil {
		return User{}, fmt.Errorf("logging in: %w", err)
	}
	if user.ID == "" {
		dummy, err := s.dummyHash()
		if err != nil {
			return User{}, fmt.Errorf("logging in: %w", err)
		}
		_, _ = s.checkPassword(dummy, password)
		return User{}, ErrBadCredentials
	}
	ok, err := s.checkPassword(encoded, password)
	if err != nil {
		return User{}, fmt.Errorf("checking the password of user %s: %w", user.ID, err)
	}
	if !ok {
		return User{}, ErrBadCredentials
	}
	err = s.update(func(tx *bolt.Tx) error {
		// Read again: the user may have been disabled while the hash ran.
		b := tx.Bucket(bucketUsers)
		if err := getJSON(b, user.ID, &user, "user"); err != nil {
			return err
		}
		if user.State != UserActive {
			return fmt.Errorf("user %s: %w", user.ID, ErrUserDisabled)
		}
		t := s.now().UTC()
		user.LastLoginAt = &t
		return putJSON(b, user.ID, &user)
	})
	if err != nil {
		return User{}, err
	}
	return user, nil
}

func (s *BoltStore) User(id string) (User, error) {
	var user User
	err := s.view(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketUsers), id, &user, "user")
	})
	return user, err
}

func (s *BoltStore) Users() ([]User, error) {
	var out []User
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("decoding user %s: %w", k, err)
			}
			out = append(out, u)
			return nil
		})
	})
	sortByCreated(out, func(u User) (time.Time, string) { return u.CreatedAt, u.ID })
	return out, err
}

// SetUserState enables or disables a user. Disabling logs the user out
// everywhere: its sessions are deleted in the same transaction. It does not
// touch the user's account or its API keys.
func (s *BoltStore) SetUserState(id string, state UserState) (User, error) {
	if !state.Valid() {
		return User{}, fmt.Errorf("%w: state must be %q or %q", ErrInvalid, UserActive, UserDisabled)
	}
	var user User
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		if err := getJSON(b, id, &user, "user"); err != nil {
			return err
		}
		if state == UserDisabled {
			if err := deleteSessions(tx, id, func(*Session) bool { return true }); err != nil {
				return err
			}
		}
		user.State = state
		return putJSON(b, id, &user)
	})
	return user, err
}
