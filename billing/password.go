package billing

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// PasswordParams are argon2id's cost parameters.
type PasswordParams struct {
	// Time is the number of passes over the memory.
	Time uint32
	// Memory is the memory cost in KiB.
	Memory uint32
	// Threads is the degree of parallelism.
	Threads uint8
}

// DefaultPasswordParams is OWASP's minimum recommendation for argon2id
// (19 MiB, two passes, one thread): about 20-50 ms per hash on a current
// server core.
var DefaultPasswordParams = PasswordParams{Time: 2, Memory: 19 * 1024, Threads: 1}

// Bounds on the parameters HashPassword accepts and CheckPassword reads
// back. The upper ones keep a corrupted or tampered stored hash from making
// one log-in take gigabytes or minutes; they are far above any sensible
// setting for a log-in form.
const (
	maxPasswordTime    = 32
	maxPasswordMemory  = 256 * 1024 // KiB
	maxPasswordThreads = 16

	passwordSaltLen = 16
	passwordKeyLen  = 32
	// Lengths CheckPassword accepts from an encoded hash: RFC 9106 asks
	// for at least 8 bytes of salt and 4 of tag.
	minSaltLen, maxSaltLen = 8, 64
	minKeyLen, maxKeyLen   = 16, 64
)

// ErrPasswordHash is wrapped by CheckPassword's errors for an encoded hash
// it cannot read.
var ErrPasswordHash = errors.New("malformed password hash")

func (p PasswordParams) validate() error {
	switch {
	case p.Time < 1 || p.Time > maxPasswordTime:
		return fmt.Errorf("argon2id time %d: must be 1 to %d", p.Time, maxPasswordTime)
	case p.Threads < 1 || p.Threads > maxPasswordThreads:
		return fmt.Errorf("argon2id threads %d: must be 1 to %d", p.Threads, maxPasswordThreads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxPasswordMemory:
		// argon2 needs 8 KiB per thread; below that x/crypto silently
		// uses more than asked, and the string would lie about the cost.
		return fmt.Errorf("argon2id memory %d KiB: must be %d to %d KiB", p.Memory, 8*uint32(p.Threads), maxPasswordMemory)
	}
	return nil
}

// HashPassword derives an argon2id hash of password with a fresh 16-byte
// salt read from rand, and encodes it in the PHC string format that other
// argon2 libraries read:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. The parameters travel in
// the string, so CheckPassword keeps verifying old hashes after they
// change.
func HashPassword(password string, p PasswordParams, rand io.Reader) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	salt := make([]byte, passwordSaltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return "", fmt.Errorf("hashing password: reading salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, passwordKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches an encoded hash made by
// HashPassword, comparing in constant time. An encoding it cannot read
// (another algorithm or version, parameters out of bounds, bad base64) is
// an error wrapping ErrPasswordHash, never a panic.
func CheckPassword(encoded, password string) (bool, error) {
	p, salt, key, err := parsePasswordHash(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// parsePasswordHash reads a PHC-encoded argon2id hash strictly: the fields
// in HashPassword's order, decimal numbers without signs, canonical
// unpadded base64.
func parsePasswordHash(encoded string) (p PasswordParams, salt, key []byte, err error) {
	bad := func(format string, args ...any) (PasswordParams, []byte, []byte, error) {
		return PasswordParams{}, nil, nil, fmt.Errorf("%w: %s", ErrPasswordHash, fmt.Sprintf(format, args...))
	}
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return bad("expected $argon2id$v=…$m=…,t=…,p=…$salt$hash")
	}
	if fields[1] != "argon2id" {
		return bad("algorithm %q is not argon2id", fields[1])
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("version %q is not v=%d", fields[2], argon2.Version)
	}
	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return bad("parameters %q: expected m=…,t=…,p=…", fields[3])
	}
	var n [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(params[i], name)
		if !ok || digits == "" || digits[0] < '0' || digits[0] > '9' {
			return bad("parameter %q: expected %s and a number", params[i], name)
		}
		if n[i], err = strconv.ParseUint(digits, 10, 32); err != nil {
			return bad("parameter %q: %v", params[i], err)
		}
	}
	if n[2] > 255 {
		return bad("parallelism %d is out of range", n[2])
	}
	p = PasswordParams{Memory: uint32(n[0]), Time: uint32(n[1]), Threads: uint8(n[2])}
	if err := p.validate(); err != nil {
		return bad("%v", err)
	}
	enc := base64.RawStdEncoding.Strict()
	if salt, err = enc.DecodeString(fields[4]); err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return bad("salt is not %d to %d bytes of unpadded base64", minSaltLen, maxSaltLen)
	}
	if key, err = enc.DecodeString(fields[5]); err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return bad("hash is not %d to %d bytes of unpadded base64", minKeyLen, maxKeyLen)
	}
	return p, salt, key, nil
}
