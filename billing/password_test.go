package billing

import (
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// cheapPassword keeps tests fast; the real cost is DefaultPasswordParams.
var cheapPassword = PasswordParams{Time: 1, Memory: 64, Threads: 1}

// referenceHashes were made by the reference C implementation (Debian's
// libargon2-1, argon2id_hash_encoded) from the password "correct horse
// battery staple" and the salt "0123456789abcdef", so they pin
// interoperability with other argon2 libraries, not just a round trip.
var referenceHashes = []struct {
	params  PasswordParams
	encoded string
}{
	{PasswordParams{Time: 2, Memory: 64, Threads: 1},
		"$argon2id$v=19$m=64,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4"},
	{PasswordParams{Time: 1, Memory: 256, Threads: 2},
		"$argon2id$v=19$m=256,t=1,p=2$MDEyMzQ1Njc4OWFiY2RlZg$Lpf76jgC98vc+ImjNhAYXk+5gV1HQGRXNmdyhBeckoE"},
	{DefaultPasswordParams,
		"$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$gy5SuVm5Z7Vw7keB9se9p87QGcomaseB/S2U1OhTsM0"},
}

const referencePassword = "correct horse battery staple"

func TestHashPasswordMatchesTheReferenceImplementation(t *testing.T) {
	for _, ref := range referenceHashes {
		t.Run(ref.encoded[:strings.LastIndexByte(ref.encoded, '$')], func(t *testing.T) {
			got, err := HashPassword(referencePassword, ref.params, &patternReader{pattern: []byte("0123456789abcdef")})
			if err != nil {
				t.Fatal(err)
			}
			if got != ref.encoded {
				t.Errorf("HashPassword = %s\nwant             %s", got, ref.encoded)
			}
			ok, err := CheckPassword(ref.encoded, referencePassword)
			if !ok || err != nil {
				t.Errorf("CheckPassword(reference hash, right password) = %v, %v", ok, err)
			}
			ok, err = CheckPassword(ref.encoded, referencePassword+".")
			if ok || err != nil {
				t.Errorf("CheckPassword(reference hash, wrong password) = %v, %v; want false, nil", ok, err)
			}
		})
	}
}

func TestHashPasswordRoundTrip(t *testing.T) {
	shape := regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	first, err := HashPassword("hunter2hunter2", cheapPassword, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !shape.MatchString(first) {
		t.Fatalf("hash %q is not $argon2id$v=19$m=64,t=1,p=1$<16 bytes>$<32 bytes>", first)
	}
	second, err := HashPassword("hunter2hunter2", cheapPassword, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if first == second {
		t.Errorf("two hashes of one password are equal: the salt is not fresh")
	}
	cases := []struct {
		name     string
		password string
		want     bool
	}{
		{"the right password matches", "hunter2hunter2", true},
		{"a wrong password does not match", "hunter2hunter3", false},
		{"a prefix of the password does not match", "hunter2hunter", false},
		{"the password with a trailing space does not match", "hunter2hunter2 ", false},
		{"the password in upper case does not match", "HUNTER2HUNTER2", false},
		{"the empty password does not match", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, h := range []string{first, second} {
				ok, err := CheckPassword(h, tc.password)
				if err != nil || ok != tc.want {
					t.Errorf("CheckPassword(%s, %q) = %v, %v; want %v", h, tc.password, ok, err, tc.want)
				}
			}
		})
	}
}

func TestHashPasswordRefusesBadParameters(t *testing.T) {
	cases := []struct {
		name string
		p    PasswordParams
	}{
		{"zero passes are refused", PasswordParams{Time: 0, Memory: 64, Threads: 1}},
		{"zero threads are refused", PasswordParams{Time: 1, Memory: 64, Threads: 0}},
		{"less than 8 KiB per thread is refused", PasswordParams{Time: 1, Memory: 15, Threads: 2}},
		{"more than 256 MiB is refused", PasswordParams{Time: 1, Memory: 256*1024 + 1, Threads: 1}},
		{"more than 32 passes are refused", PasswordParams{Time: 33, Memory: 64, Threads: 1}},
		{"more than 16 threads are refused", PasswordParams{Time: 1, Memory: 1024, Threads: 17}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := HashPassword("password", tc.p, rand.Reader); err == nil {
				t.Errorf("HashPassword(%+v) = %s, want an error", tc.p, h)
			}
		})
	}
	t.Run("a reader that fails is an error", func(t *testing.T) {
		if h, err := HashPassword("password", cheapPassword, iotestErrReader{}); !errors.Is(err, errBrokenReader) {
			t.Errorf("HashPassword with a broken reader = %q, %v", h, err)
		}
	})
}

func TestCheckPasswordRefusesMalformedHashes(t *testing.T) {
	const good = "$argon2id$v=19$m=64,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4"
	swap := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q is not in the good hash", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	cases := []struct {
		name, encoded string
	}{
		{"the empty string is refused", ""},
		{"a bcrypt hash is refused", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i is refused", swap("$argon2id$", "$argon2i$")},
		{"version 16 is refused", swap("v=19", "v=16")},
		{"a missing version is refused", swap("$v=19", "")},
		{"a missing field is refused", good[:strings.LastIndexByte(good, '$')]},
		{"an extra field is refused", good + "$x"},
		{"text before the first $ is refused", "x" + good},
		{"parameters out of order are refused", swap("m=64,t=2,p=1", "t=2,m=64,p=1")},
		{"a missing parameter is refused", swap("m=64,t=2,p=1", "m=64,t=2")},
		{"an extra parameter is refused", swap("m=64,t=2,p=1", "m=64,t=2,p=1,k=3")},
		{"a signed number is refused", swap("m=64", "m=+64")},
		{"a space in a number is refused", swap("m=64", "m= 64")},
		{"an empty number is refused", swap("t=2", "t=")},
		{"a number over 32 bits is refused", swap("m=64", "m=4294967296")},
		{"parallelism over 255 is refused", swap("p=1", "p=257")},
		{"zero passes are refused", swap("t=2", "t=0")},
		{"zero threads are refused", swap("p=1", "p=0")},
		{"too little memory for the threads is refused", swap("m=64,t=2,p=1", "m=64,t=2,p=9")},
		{"gigabytes of memory are refused", swap("m=64", "m=4194304")},
		{"a thousand passes are refused", swap("t=2", "t=1000")},
		{"a salt that is not base64 is refused", swap("MDEyMzQ1Njc4OWFiY2RlZg", "MDEyMzQ1Njc4OWFiY2Rl*g")},
		{"a padded salt is refused", swap("MDEyMzQ1Njc4OWFiY2RlZg", "MDEyMzQ1Njc4OWFiY2RlZg==")},
		{"a salt with stray low bits is refused", swap("MDEyMzQ1Njc4OWFiY2RlZg", "MDEyMzQ1Njc4OWFiY2RlZh")},
		{"a salt under 8 bytes is refused", swap("MDEyMzQ1Njc4OWFiY2RlZg", "MDEyMzQ1Ng")},
		{"an empty salt is refused", swap("MDEyMzQ1Njc4OWFiY2RlZg", "")},
		{"a hash under 16 bytes is refused", swap("gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4", "gAwJW5vx5itn2V9KHlEU")},
		{"an empty hash is refused", swap("gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4", "")},
		{"a hash in base64url is refused", "$argon2id$v=19$m=256,t=1,p=2$MDEyMzQ1Njc4OWFiY2RlZg$Lpf76jgC98vc-ImjNhAYXk-5gV1HQGRXNmdyhBeckoE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := CheckPassword(tc.encoded, referencePassword)
			if ok || !errors.Is(err, ErrPasswordHash) {
				t.Errorf("CheckPassword(%q) = %v, %v; want false and an error wrapping ErrPasswordHash", tc.encoded, ok, err)
			}
		})
	}
}

func TestCheckPasswordRefusesTamperedHashes(t *testing.T) {
	const good = "$argon2id$v=19$m=64,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4"
	cases := []struct {
		name, encoded string
	}{
		{"a changed memory cost does not match", strings.Replace(good, "m=64", "m=72", 1)},
		{"a changed pass count does not match", strings.Replace(good, "t=2", "t=1", 1)},
		{"a changed salt does not match", strings.Replace(good, "MDEyMzQ1Njc4OWFiY2RlZg", "MTEyMzQ1Njc4OWFiY2RlZg", 1)},
		{"a changed hash does not match", strings.Replace(good, "gAwJW5", "hAwJW5", 1)},
		{"a hash cut to 24 bytes does not match", strings.Replace(good, "gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQf0gMaHGx1h4", "gAwJW5vx5itn2V9KHlEUjyUCrpDYgKyQ", 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := CheckPassword(tc.encoded, referencePassword)
			if ok || err != nil {
				t.Errorf("CheckPassword(%q) = %v, %v; want false, nil", tc.encoded, ok, err)
			}
		})
	}
}

// FuzzCheckPassword feeds CheckPassword arbitrary encodings: it must never
// panic, and whatever it accepts must parse to parameters within bounds.
// Encodings whose cost is more than a fuzzer should pay per input are only
// parsed.
func FuzzCheckPassword(f *testing.F) {
	for _, ref := range referenceHashes {
		f.Add(ref.encoded, referencePassword)
	}
	f.Add("$argon2id$v=19$m=8,t=1,p=1$MDEyMzQ1Njc$MDEyMzQ1Njc4OWFiY2RlZg", "")
	f.Add("$argon2id$v=19$m=4294967295,t=4294967295,p=255$$", "x")
	f.Add("$argon2id$v=19$m=64,t=1,p=0$MDEyMzQ1Njc4OWFiY2RlZg$MDEyMzQ1Njc4OWFiY2RlZg", "x")
	f.Add("$$$$$", "")
	f.Fuzz(func(t *testing.T, encoded, password string) {
		p, _, _, err := parsePasswordHash(encoded)
		if err != nil {
			if !errors.Is(err, ErrPasswordHash) {
				t.Fatalf("parse error %v does not wrap ErrPasswordHash", err)
			}
			return
		}
		if verr := p.validate(); verr != nil {
			t.Fatalf("parsed parameters %+v out of bounds: %v", p, verr)
		}
		if p.Memory > 1024 || p.Time > 4 {
			return
		}
		if _, err := CheckPassword(encoded, password); err != nil {
			t.Fatalf("CheckPassword refused what it parsed: %v", err)
		}
	})
}
