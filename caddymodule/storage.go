package caddymodule

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// databases holds every open store, keyed by the absolute path of its file.
// Caddy provisions a new config before it cleans up the old one, so a
// reload takes a second reference to the open file instead of opening it
// again (which bbolt's exclusive lock would refuse), and the key cache
// survives with it.
var databases = caddy.NewUsagePool()

// database is one open store and what must live exactly as long as it.
type database struct {
	path  string
	store *billing.BoltStore
	keys  *billing.Keyring
	// bank holds and settles spending; its holds must outlive a reload
	// as the requests they belong to do.
	bank *billing.Bank
	// demoDone is set once the demo key has been minted for this open
	// file, so a reload does not mint another.
	demoDone atomic.Bool
}

func (d *database) Destruct() error {
	d.keys.Close()
	if err := d.store.Close(); err != nil {
		return fmt.Errorf("closing database %s: %w", d.path, err)
	}
	return nil
}

// acquireDatabase opens the store at path, or takes another reference to it
// if this process already has it open. Every successful call must be paired
// with exactly one releaseDatabase.
func acquireDatabase(path string, timeout time.Duration, cacheSize int64) (*database, error) {
	val, _, err := databases.LoadOrNew(path, func() (caddy.Destructor, error) {
		store, err := billing.OpenBolt(path, billing.BoltOptions{Timeout: timeout})
		if err != nil {
			return nil, err
		}
		keys, err := billing.NewKeyring(store, billing.KeyringOptions{Size: cacheSize})
		if err != nil {
			store.Close()
			return nil, err
		}
		return &database{path: path, store: store, keys: keys, bank: billing.NewBank(store)}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*database), nil
}

func releaseDatabase(path string) error {
	_, err := databases.Delete(path)
	return err
}

// databasePath turns the configured storage path into the pool's key.
func databasePath(configured string) (string, error) {
	if configured == "" {
		configured = filepath.Join(caddy.AppDataDir(), "arcane", "arcane.db")
	}
	abs, err := filepath.Abs(configured)
	if err != nil {
		return "", fmt.Errorf("resolving storage path %s: %w", configured, err)
	}
	return filepath.Clean(abs), nil
}
