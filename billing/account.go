package billing

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Errors the store returns; callers branch on them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

// AccountState says whether an account's keys may be used.
type AccountState string

// Account states.
const (
	AccountActive   AccountState = "active"
	AccountDisabled AccountState = "disabled"
)

// Valid reports whether s is a known state.
func (s AccountState) Valid() bool { return s == AccountActive || s == AccountDisabled }

// Account is a customer: a prepaid balance that its keys spend.
type Account struct {
	ID        string       `json:"id"`
	Name      string       `json:"name"`
	Balance   Amount       `json:"balance"`
	State     AccountState `json:"state"`
	CreatedAt time.Time    `json:"created_at"`
}

func validateAccountName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: name is required", ErrInvalid)
	}
	if len(name) > 200 {
		return fmt.Errorf("%w: name is longer than 200 bytes", ErrInvalid)
	}
	return nil
}

// EntryKind says what moved an account's balance.
type EntryKind string

// Ledger entry kinds.
const (
	// EntryCredit is money added by the operator (including the opening
	// balance of a new account).
	EntryCredit EntryKind = "credit"
	// EntryCharge is a settled API request: its cost (zero or more) taken
	// from the balance, with what was used.
	EntryCharge EntryKind = "charge"
)

// Entry is one ledger row: an account's balance moved by Amount (positive
// for credits), leaving Balance. Rows are append-only; replaying an
// account's rows from zero gives its stored balance.
type Entry struct {
	// Seq orders an account's rows; it is also the pagination cursor.
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	AccountID string    `json:"account_id"`
	Kind      EntryKind `json:"kind"`
	Amount    Amount    `json:"amount"`
	Balance   Amount    `json:"balance"`
	Note      string    `json:"note,omitempty"`

	// The rest describes a charge (EntryCharge): the request it settles
	// and what it used. Charges have Amount = -cost. CachedTokens and
	// CacheWriteTokens are the parts of PromptTokens the provider read
	// from and wrote to its prompt cache.
	RequestID        string `json:"request_id,omitempty"`
	KeyID            string `json:"key_id,omitempty"`
	Model            string `json:"model,omitempty"`
	Deployment       string `json:"deployment,omitempty"`
	PromptTokens     int64  `json:"prompt_tokens,omitempty"`
	CachedTokens     int64  `json:"cached_tokens,omitempty"`
	CacheWriteTokens int64  `json:"cache_write_tokens,omitempty"`
	CompletionTokens int64  `json:"completion_tokens,omitempty"`
	// Basis says where the token counts came from: "upstream" (the
	// provider reported them) or "counted" (the gateway counted what it
	// delivered).
	Basis string `json:"basis,omitempty"`
	// Outcome says how the request ended: "ok", "client_closed",
	// "upstream_error", ...
	Outcome string `json:"outcome,omitempty"`
	// Attempts is how many deployments were called for the request: more
	// than one when it was moved on from failing ones (Deployment served
	// it, or failed last).
	Attempts int `json:"attempts,omitempty"`
}

// Cost is what a charge took from the balance (zero for other rows).
func (e *Entry) Cost() Amount {
	if e.Kind != EntryCharge {
		return 0
	}
	return -e.Amount
}

// sortByCreated orders records oldest first, by id where times tie.
func sortByCreated[T any](s []T, key func(T) (time.Time, string)) {
	slices.SortFunc(s, func(a, b T) int {
		ta, ia := key(a)
		tb, ib := key(b)
		if c := ta.Compare(tb); c != 0 {
			return c
		}
		return strings.Compare(ia, ib)
	})
}
