package billing

// Store persists accounts, keys and the ledger. BoltStore is the embedded
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

	// Ping checks that the store can be read.
	Ping() error
	Close() error
}
