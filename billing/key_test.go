package billing

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"time"
)

// patternReader yields pattern over and over, forever.
type patternReader struct {
	pattern []byte
	off     int
}

func (r *patternReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.pattern[r.off]
		r.off = (r.off + 1) % len(r.pattern)
	}
	return len(p), nil
}

// newSecretForTest returns a fresh secret from crypto/rand or fails t.
func newSecretForTest(t testing.TB) string {
	t.Helper()
	s, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatalf("NewSecret: %v", err)
	}
	return s
}

// referenceChecksum is an independent encoding of a body's CRC-32 as six
// big-endian base62 digits.
func referenceChecksum(body string) string {
	sum := uint64(crc32.ChecksumIEEE([]byte(body)))
	out := make([]byte, keyCheckLen)
	for i := keyCheckLen - 1; i >= 0; i-- {
		out[i] = base62[sum%62]
		sum /= 62
	}
	return string(out)
}

func TestNewSecretHasTheDocumentedShape(t *testing.T) {
	if KeyLen != 52 {
		t.Fatalf("KeyLen = %d, want 52", KeyLen)
	}
	for i := range 50 {
		s := newSecretForTest(t)
		t.Run(fmt.Sprintf("secret %d is ak_ plus 49 base62 characters that ParseSecret accepts", i), func(t *testing.T) {
			if len(s) != KeyLen {
				t.Fatalf("len(%q) = %d, want %d", s, len(s), KeyLen)
			}
			if !strings.HasPrefix(s, "ak_") {
				t.Fatalf("%q does not start with ak_", s)
			}
			for j := len(KeyPrefix); j < len(s); j++ {
				if !strings.ContainsRune(base62, rune(s[j])) {
					t.Fatalf("%q has non-base62 byte %q at %d", s, s[j], j)
				}
			}
			body, check := s[3:3+keyBodyLen], s[3+keyBodyLen:]
			if want := referenceChecksum(body); check != want {
				t.Fatalf("checksum of %q is %q, want %q", s, check, want)
			}
			h, err := ParseSecret(s)
			if err != nil {
				t.Fatalf("ParseSecret(%q): %v", s, err)
			}
			if h != HashSecret(s) {
				t.Fatalf("ParseSecret(%q) returned a hash other than HashSecret", s)
			}
		})
	}
}

func TestNewSecretNeverRepeats(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		s := newSecretForTest(t)
		if seen[s] {
			t.Fatalf("NewSecret returned %q twice", s)
		}
		seen[s] = true
	}
}

func TestNewSecretIsDeterministicForAFixedReader(t *testing.T) {
	// 248 and above must be skipped; below 248 a byte b becomes base62[b%62].
	pattern := []byte{248, 255, 0, 1, 61, 62, 123, 247, 250, 185}
	// 0->'0' 1->'1' 61->'z' 62->'0' 123->'z' 247->'z' 185->'z'
	accepted := "01z0zzz"
	cases := []struct {
		name   string
		reader func() io.Reader
	}{
		{"a repeating pattern with bytes at and above 248 skips those bytes", func() io.Reader {
			return &patternReader{pattern: pattern}
		}},
		{"a first read made only of rejected bytes is skipped entirely", func() io.Reader {
			return io.MultiReader(bytes.NewReader(bytes.Repeat([]byte{255}, 64)), &patternReader{pattern: pattern})
		}},
	}
	var body strings.Builder
	for body.Len() < keyBodyLen {
		body.WriteString(accepted)
	}
	wantBody := body.String()[:keyBodyLen]
	want := KeyPrefix + wantBody + referenceChecksum(wantBody)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewSecret(tc.reader())
			if err != nil {
				t.Fatalf("NewSecret: %v", err)
			}
			b, err := NewSecret(tc.reader())
			if err != nil {
				t.Fatalf("NewSecret: %v", err)
			}
			if a != b {
				t.Fatalf("the same reader gave %q then %q", a, b)
			}
			if a != want {
				t.Fatalf("NewSecret = %q, want %q", a, want)
			}
			if _, err := ParseSecret(a); err != nil {
				t.Fatalf("ParseSecret(%q): %v", a, err)
			}
		})
	}
}

func TestNewSecretReportsAReaderThatRunsDry(t *testing.T) {
	cases := []struct {
		name   string
		reader io.Reader
	}{
		{"an empty reader is an error", bytes.NewReader(nil)},
		{"a reader shorter than one block is an error", bytes.NewReader(make([]byte, 10))},
		{"a reader with only rejected bytes is an error, not a hang", bytes.NewReader(bytes.Repeat([]byte{250}, 640))},
		{"a failing reader's error is passed on", iotestErrReader{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSecret(tc.reader)
			if err == nil {
				t.Fatalf("NewSecret = %q, want an error", s)
			}
			if s != "" {
				t.Fatalf("NewSecret returned %q alongside its error", s)
			}
		})
	}
}

var errBrokenReader = errors.New("broken reader")

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errBrokenReader }

func TestParseSecretRefusesEveryOneCharacterChange(t *testing.T) {
	s := newSecretForTest(t)
	for i := len(KeyPrefix); i < KeyLen; i++ {
		// A different base62 character at position i.
		j := strings.IndexByte(base62, s[i])
		other := base62[(j+1+i)%len(base62)]
		if other == s[i] {
			other = base62[(j+1)%len(base62)]
		}
		part := "body"
		if i >= len(KeyPrefix)+keyBodyLen {
			part = "checksum"
		}
		mutated := s[:i] + string(other) + s[i+1:]
		t.Run(fmt.Sprintf("changing %s character %d to another base62 character is a checksum mismatch", part, i), func(t *testing.T) {
			if _, err := ParseSecret(mutated); !errors.Is(err, ErrKeyChecksum) {
				t.Fatalf("ParseSecret(%q) = %v, want ErrKeyChecksum", mutated, err)
			}
		})
		junk := s[:i] + "-" + s[i+1:]
		t.Run(fmt.Sprintf("changing %s character %d to a dash is malformed", part, i), func(t *testing.T) {
			if _, err := ParseSecret(junk); !errors.Is(err, ErrMalformedKey) {
				t.Fatalf("ParseSecret(%q) = %v, want ErrMalformedKey", junk, err)
			}
		})
	}
}

func TestParseSecretRefusesMalformedSecrets(t *testing.T) {
	s := newSecretForTest(t)
	body := s[len(KeyPrefix):]
	cases := []struct {
		name string
		in   string
	}{
		{"an empty string is malformed", ""},
		{"the prefix alone is malformed", "ak_"},
		{"a secret one character short is malformed", s[:KeyLen-1]},
		{"a secret with one extra character is malformed", s + "0"},
		{"a secret twice over is malformed", s + s},
		{"an sk_ prefix is malformed", "sk_" + body},
		{"an upper-case prefix is malformed", "AK_" + body},
		{"a dash instead of the underscore is malformed", "ak-" + body},
		{"a dash in the body is malformed", s[:10] + "-" + s[11:]},
		{"an underscore in the body is malformed", s[:10] + "_" + s[11:]},
		{"a space in the body is malformed", s[:10] + " " + s[11:]},
		{"a NUL byte in the body is malformed", s[:10] + "\x00" + s[11:]},
		{"a plus sign in the checksum is malformed", s[:KeyLen-1] + "+"},
		{"a two-byte unicode letter in place of two characters is malformed", s[:10] + "é" + s[12:]},
		{"a three-byte unicode character in place of three characters is malformed", s[:20] + "€" + s[23:]},
		{"a byte above 0x7f is malformed", s[:30] + "\xff" + s[31:]},
		{"leading whitespace is malformed", " " + s[:KeyLen-1]},
		{"a bearer scheme prefix is malformed", "Bearer " + s},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseSecret(tc.in)
			if !errors.Is(err, ErrMalformedKey) {
				t.Fatalf("ParseSecret(%q) = %v, want ErrMalformedKey", tc.in, err)
			}
			if h != (KeyHash{}) {
				t.Fatalf("ParseSecret(%q) returned a non-zero hash alongside its error", tc.in)
			}
		})
	}
}

func TestLast4IsTheLastFourCharacters(t *testing.T) {
	s := newSecretForTest(t)
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"a fresh secret shows its last four characters", s, s[KeyLen-4:]},
		{"a fixed secret shows its last four characters", "ak_" + strings.Repeat("0", keyBodyLen) + "abcdef", "cdef"},
		{"a four-character string is returned whole", "wxyz", "wxyz"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Last4(tc.in); got != tc.want {
				t.Fatalf("Last4(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseSecretDoesNotAllocate(t *testing.T) {
	valid := newSecretForTest(t)
	bad := valid[:KeyLen-1] + string(base62[(strings.IndexByte(base62, valid[KeyLen-1])+1)%62])
	cases := []struct {
		name string
		in   string
	}{
		{"a valid secret is parsed without allocating", valid},
		{"a checksum mismatch is refused without allocating", bad},
		{"a malformed secret is refused without allocating", "sk_" + valid[3:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				_, _ = ParseSecret(tc.in)
			})
			if allocs != 0 {
				t.Fatalf("ParseSecret allocated %v times per call, want 0", allocs)
			}
		})
	}
}

func BenchmarkParseSecret(b *testing.B) {
	s := newSecretForTest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSecret(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewSecret(rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseSecret(f *testing.F) {
	valid, err := NewSecret(&patternReader{pattern: []byte{7, 250, 99, 200, 13, 61, 248, 0}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:KeyLen-1] + "0")
	f.Add("sk_" + valid[3:])
	f.Add(valid[:10] + "-" + valid[11:])
	f.Add(valid[:10] + "é" + valid[12:])
	f.Add("")
	f.Add("ak_")
	f.Add(valid + "0")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseSecret(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedKey) && !errors.Is(err, ErrKeyChecksum) {
				t.Fatalf("ParseSecret(%q) failed with an unexpected error %v", s, err)
			}
			if h != (KeyHash{}) {
				t.Fatalf("ParseSecret(%q) returned a hash alongside its error", s)
			}
			return
		}
		if len(s) != KeyLen {
			t.Fatalf("ParseSecret accepted %q of length %d", s, len(s))
		}
		if !strings.HasPrefix(s, KeyPrefix) {
			t.Fatalf("ParseSecret accepted %q without the %s prefix", s, KeyPrefix)
		}
		if h != HashSecret(s) {
			t.Fatalf("ParseSecret(%q) returned a hash other than HashSecret", s)
		}
		if want := referenceChecksum(s[3 : 3+keyBodyLen]); s[3+keyBodyLen:] != want {
			t.Fatalf("ParseSecret accepted %q whose checksum should be %q", s, want)
		}
	})
}

func TestKeySpecValidate(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	past := now.Add(-time.Second)
	future := now.Add(time.Hour)
	cases := []struct {
		name    string
		spec    KeySpec
		wantErr bool
	}{
		{"an empty spec is valid", KeySpec{}, false},
		{"a full spec with a future expiry is valid", KeySpec{Name: "ci", Models: []string{"gpt-x"}, RPM: 60, TPM: 1000, ExpiresAt: &future}, false},
		{"a name of exactly 200 bytes is valid", KeySpec{Name: strings.Repeat("n", 200)}, false},
		{"a name of 201 bytes is refused", KeySpec{Name: strings.Repeat("n", 201)}, true},
		{"a negative rpm is refused", KeySpec{RPM: -1}, true},
		{"a negative tpm is refused", KeySpec{TPM: -1}, true},
		{"an expiry in the past is refused", KeySpec{ExpiresAt: &past}, true},
		{"an expiry at exactly now is refused", KeySpec{ExpiresAt: &now}, true},
		{"an empty model name is refused", KeySpec{Models: []string{"gpt-x", ""}}, true},
		{"a name in any script is valid", KeySpec{Name: "clé de prod 本番"}, false},
		{"a name with a terminal escape is refused", KeySpec{Name: "ci\x1b[2K\rkey_FAKE"}, true},
		{"a name with a newline is refused", KeySpec{Name: "ci\nprod"}, true},
		{"a name with a bidirectional override is refused", KeySpec{Name: "ci\u202eprod"}, true},
		{"a name that is not UTF-8 is refused", KeySpec{Name: "ci\xff"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate(now)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want an error wrapping ErrInvalid", err)
			}
		})
	}
}

func TestKeyStateFollowsRevocationAndExpiry(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	expires := now.Add(time.Hour)
	revoked := now.Add(-time.Minute)
	cases := []struct {
		name string
		key  Key
		at   time.Time
		want KeyState
	}{
		{"a key with no expiry or revocation is active", Key{}, now, KeyActive},
		{"a key before its expiry is active", Key{ExpiresAt: &expires}, expires.Add(-time.Nanosecond), KeyActive},
		{"a key at its exact expiry is expired", Key{ExpiresAt: &expires}, expires, KeyExpired},
		{"a key after its expiry is expired", Key{ExpiresAt: &expires}, expires.Add(time.Hour), KeyExpired},
		{"a revoked key is revoked", Key{RevokedAt: &revoked}, now, KeyRevoked},
		{"a revoked key past its expiry reports revoked first", Key{RevokedAt: &revoked, ExpiresAt: &expires}, expires.Add(time.Hour), KeyRevoked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.key.State(tc.at); got != tc.want {
				t.Fatalf("State = %q, want %q", got, tc.want)
			}
		})
	}
}
