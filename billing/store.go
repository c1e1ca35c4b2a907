package billing

import "time"

// Store persists accounts, keys, the ledger, and the dashboard's users,
// sessions and invites. BoltStore is the embedded
// implementation; the interface is what a shared database would implement
// so that several gateway instances can serve one set of accounts.
//
// Every method is safe for concurrent use. Methods that change state commit
// durably before they return.
type Store interface {
	// CreateAccount adds an account with an opening balance (zero or
	// more); a positive balance is written to the ledger as a credit.
	CreateAccount(name string, balance Amount) (Account, error)
	Account(id string) (Account, error)
	// Accounts lists every account, oldest first.
	Accounts() ([]Account, error)
	SetAccountState(id string, state AccountState) (Account, error)
	// Credit adds a positive amount to an account and writes a ledger row.
	Credit(id string, amount Amount, note string) (Account, Entry, error)

	// CreateKey mints a key for an account. The secret is returned here
	// and nowhere else: only its hash is stored.
	CreateKey(accountID string, spec KeySpec) (key Key, secret string, err error)
	Key(id string) (Key, error)
	// Keys lists an account's keys, oldest first.
	Keys(accountID string) ([]Key, error)
	// KeyByHash finds the key a secret hash belongs to and its account,
	// in one consistent read.
	KeyByHash(h KeyHash) (Key, Account, error)
	// RevokeKey marks a key revoked; revoking twice is not an error and
	// keeps the first revocation time.
	RevokeKey(id string) (Key, error)

	// Ledger returns up to q.Limit of an account's rows that match q's
	// filters, newest first, starting below sequence number q.Before (0
	// means from the newest), and whether older matching rows remain.
	Ledger(accountID string, q LedgerQuery) (rows []Entry, more bool, err error)
	// Usage sums the charges in a period per account and model, ordered
	// by account id, then model.
	Usage(q UsageQuery) ([]UsageRow, error)
	// Audit replays every ledger and checks it against the balances and
	// the requests index, reading one consistent snapshot.
	Audit() (AuditReport, error)

	// Balance returns an account's balance and the sequence number of the
	// ledger row that left it (0 before any row), read together.
	Balance(accountID string) (Amount, uint64, error)
	// Settle records a request's charge durably before it returns: the
	// debit and its ledger row, once per request id. Settling a request id
	// again charges nothing and returns the first row with an error
	// wrapping ErrSettled.
	Settle(c Charge) (Entry, error)
	// Request returns the ledger row that settled a request id.
	Request(requestID string) (Entry, error)

	// DailyUsage sums an account's charges in a period per UTC day and
	// model, ordered by day, then model.
	DailyUsage(accountID string, since, until time.Time) ([]DailyUsageRow, error)

	// CreateUser adds a dashboard user and the account it owns (named
	// after the email, with an opening balance credited like
	// CreateAccount's) in one transaction, consuming the invite code when
	// one is given (ErrInviteInvalid if unknown, used, revoked or
	// expired). An invite bound to an account makes the user one more
	// user of that account instead: no account is created, nothing is
	// credited. A registered email is ErrEmailTaken. On any error nothing
	// is created.
	CreateUser(email, password string, balance Amount, invite string) (User, Account, error)
	// Login checks an email and password and records the log-in time.
	// Unknown emails and wrong passwords are both ErrBadCredentials, at
	// the cost of one password hash each; a disabled user with the right
	// password is ErrUserDisabled.
	Login(email, password string) (User, error)
	User(id string) (User, error)
	// Users lists every user, oldest first.
	Users() ([]User, error)
	// SetUserState enables or disables a user; disabling deletes all of
	// its sessions in the same transaction. The account and its keys are
	// not touched.
	SetUserState(id string, state UserState) (User, error)

	// CreateSession starts a session for an active user and returns its
	// token, here and nowhere else: only its hash is stored. The user's
	// expired sessions are deleted on the way.
	CreateSession(userID string, lifetime time.Duration) (sess Session, token string, err error)
	// SessionByToken finds a token's session and its user in one
	// consistent read: ErrNotFound for an unknown token,
	// ErrSessionExpired (deleting it) for an expired one,
	// ErrUserDisabled when the user is disabled.
	SessionByToken(token string) (Session, User, error)
	// DeleteSession ends a token's session; an unknown token is not an
	// error.
	DeleteSession(token string) error
	// CreateInvite mints a one-use sign-up code, valid until
	// spec.ExpiresAt (nil: forever), bound to the existing account
	// spec.AccountID when set (ErrNotFound if there is none). The code is
	// returned here and nowhere else: only its hash is stored.
	CreateInvite(spec InviteSpec) (inv Invite, code string, err error)
	// Invites lists every invite, oldest first, never with its code.
	Invites() ([]Invite, error)
	// RevokeInvite makes an unused invite unusable; revoking twice is not
	// an error and keeps the first revocation time. Revoking a used
	// invite is ErrInvalid.
	RevokeInvite(id string) (Invite, error)

	// Ping checks that the store can be read.
	Ping() error
	Close() error
}
