package caddymodule

import (
	"fmt"
	"os"

	"github.com/arcaneapi/caddy-arcane/billing"
)

const (
	demoAccountName = "demo"
	demoKeyName     = "demo"
	demoBalance     = 10 * billing.Dollar
)

// startDemo makes sure the demo account exists, revokes its earlier demo
// keys and mints a new one, printed once to standard error (not the log: a
// secret must never reach a log pipeline).
func startDemo(db *database) error {
	accounts, err := db.store.Accounts()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var acct *billing.Account
	for i := range accounts {
		if accounts[i].Name == demoAccountName {
			acct = &accounts[i]
			break
		}
	}
	if acct == nil {
		created, err := db.store.CreateAccount(demoAccountName, demoBalance)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		acct = &created
	}
	keys, err := db.store.Keys(acct.ID)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, k := range keys {
		if k.Name == demoKeyName && k.RevokedAt == nil {
			if _, err := db.keys.RevokeKey(k.ID); err != nil {
				return fmt.Errorf("demo: revoking earlier demo key: %w", err)
			}
		}
	}
	key, secret, err := db.store.CreateKey(acct.ID, billing.KeySpec{Name: demoKeyName})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(os.Stderr, "\narcane demo mode (for trying arcane out; leave `demo` off in production)\n"+
		"  account %s (%s), balance $%s\n"+
		"  key     %s (%s), shown once; earlier demo keys are revoked\n"+
		"  use it: curl -H \"Authorization: Bearer <the key above>\" http://<site>/v1/status\n\n",
		acct.ID, acct.Name, acct.Balance, secret, key.ID)
	return nil
}
