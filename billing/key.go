package billing

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
	"unicode"
	"unicode/utf8"
)

// An API key secret reads "ak_" + 43 base62 characters drawn uniformly from
// a cryptographic source (256 bits) + a 6-character base62 CRC-32 of those
// 43, for 52 characters in all. The checksum lets the gateway refuse typos
// and junk without touching the store; it is not a secret and does not
// authenticate anything. Only the SHA-256 of the whole secret is stored.
const (
	KeyPrefix   = "ak_"
	keyBodyLen  = 43
	keyCheckLen = 6
	// KeyLen is the length of every key secret.
	KeyLen = len(KeyPrefix) + keyBodyLen + keyCheckLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Errors a presented key secret can fail with before any lookup.
var (
	ErrMalformedKey = errors.New("malformed API key")
	ErrKeyChecksum  = errors.New("API key checksum mismatch")
)

// KeyHash is the SHA-256 of a key secret: the only form in which a secret is
// stored or compared.
type KeyHash [sha256.Size]byte

// NewSecret returns a fresh key secret, reading randomness from r (use
// crypto/rand.Reader outside tests).
func NewSecret(r io.Reader) (string, error) {
	var out [KeyLen]byte
	copy(out[:], KeyPrefix)
	body := out[len(KeyPrefix) : len(KeyPrefix)+keyBodyLen]
	if err := randomBase62(r, body); err != nil {
		return "", fmt.Errorf("generating API key: %w", err)
	}
	putChecksum(out[len(KeyPrefix)+keyBodyLen:], checksum(body))
	return string(out[:]), nil
}

// ParseSecret checks a presented secret's shape and checksum and returns its
// hash. It does not allocate, so junk costs next to nothing to refuse.
func ParseSecret(s string) (KeyHash, error) {
	if len(s) != KeyLen || s[:len(KeyPrefix)] != KeyPrefix {
		return KeyHash{}, ErrMalformedKey
	}
	var buf [KeyLen]byte
	copy(buf[:], s)
	for _, c := range buf[len(KeyPrefix):] {
		if !isBase62(c) {
			return KeyHash{}, ErrMalformedKey
		}
	}
	body := buf[len(KeyPrefix) : len(KeyPrefix)+keyBodyLen]
	var want [keyCheckLen]byte
	putChecksum(want[:], checksum(body))
	if want != [keyCheckLen]byte(buf[len(KeyPrefix)+keyBodyLen:]) {
		return KeyHash{}, ErrKeyChecksum
	}
	return sha256.Sum256(buf[:]), nil
}

// HashSecret returns the SHA-256 of a secret without checking its shape.
func HashSecret(s string) KeyHash { return sha256.Sum256([]byte(s)) }

// Last4 returns the last four characters of a secret, the part shown in
// listings so people can tell their keys apart.
func Last4(secret string) string { return secret[len(secret)-4:] }

// crcTable is the IEEE CRC-32 table. checksum walks it by hand because
// crc32.ChecksumIEEE hands its argument to assembly, which makes the key
// buffer escape and costs an allocation on every authentication.
var crcTable = crc32.MakeTable(crc32.IEEE)

// checksum is crc32.ChecksumIEEE(p), without the allocation.
func checksum(p []byte) uint32 {
	crc := ^uint32(0)
	for _, b := range p {
		crc = crcTable[byte(crc)^b] ^ crc>>8
	}
	return ^crc
}

func putChecksum(dst []byte, sum uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62[sum%62]
		sum /= 62
	}
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// randomBase62 fills dst with uniformly random base62 characters. Bytes at
// or above 248 (4*62) are rejected so that every character is equally
// likely.
func randomBase62(r io.Reader, dst []byte) error {
	var buf [64]byte
	for i := 0; i < len(dst); {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return err
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			dst[i] = base62[b%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

// newID returns prefix + 16 random base62 characters (95 bits), the shape
// of account, key and ledger ids ("acct_…", "key_…").
func newID(r io.Reader, prefix string) (string, error) {
	b := make([]byte, len(prefix)+16)
	copy(b, prefix)
	if err := randomBase62(r, b[len(prefix):]); err != nil {
		return "", fmt.Errorf("generating id: %w", err)
	}
	return string(b), nil
}

// KeyState says whether a key authenticates.
type KeyState string

// Key states, as the admin API reports them.
const (
	KeyActive  KeyState = "active"
	KeyRevoked KeyState = "revoked"
	KeyExpired KeyState = "expired"
)

// Key is an API key's record. It never holds the secret; the store indexes
// it by the secret's hash.
type Key struct {
	ID        string     `json:"id"`
	AccountID string     `json:"account_id"`
	Name      string     `json:"name,omitempty"`
	Last4     string     `json:"last4"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Models, when set, is the allow-list of public model IDs this key may
	// call; empty means every model in the catalog.
	Models []string `json:"models,omitempty"`
	// RPM and TPM, when positive, override the configured per-key request
	// and token limits.
	RPM int64 `json:"rpm,omitempty"`
	TPM int64 `json:"tpm,omitempty"`
}

// State reports whether k authenticates at time now.
func (k *Key) State(now time.Time) KeyState {
	switch {
	case k.RevokedAt != nil:
		return KeyRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return KeyExpired
	}
	return KeyActive
}

// KeySpec is what a caller chooses about a new key.
type KeySpec struct {
	Name      string
	Models    []string
	RPM, TPM  int64
	ExpiresAt *time.Time
}

// Validate refuses specs that cannot make a usable key.
func (s KeySpec) Validate(now time.Time) error {
	switch {
	case len(s.Name) > 200:
		return fmt.Errorf("%w: name is longer than 200 bytes", ErrInvalid)
	case !printable(s.Name):
		// Names are shown in terminals (caddy arcane keys list) and pages;
		// a client choosing one must not be able to write control codes.
		return fmt.Errorf("%w: name must be valid UTF-8 without control or formatting characters", ErrInvalid)
	case s.RPM < 0 || s.TPM < 0:
		return fmt.Errorf("%w: rpm and tpm must not be negative", ErrInvalid)
	case s.ExpiresAt != nil && !s.ExpiresAt.After(now):
		return fmt.Errorf("%w: expires_at is not in the future", ErrInvalid)
	}
	for _, m := range s.Models {
		if m == "" {
			return fmt.Errorf("%w: empty model name in the allow-list", ErrInvalid)
		}
	}
	return nil
}

// printable reports whether s is valid UTF-8 with no control or
// formatting (Cf: bidirectional overrides, zero-width) characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// defaultRand is where secrets and ids come from outside tests.
var defaultRand io.Reader = rand.Reader
