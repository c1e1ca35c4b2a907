package billing

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openUserStore is openTestStore with cheap password hashing.
func openUserStore(t testing.TB) (*BoltStore, *fakeClock, string) {
	t.Helper()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "billing.db")
	p := cheapPassword
	s, err := OpenBolt(path, BoltOptions{Now: clock.Now, Password: &p})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clock, path
}

func mustCreateUser(t testing.TB, s Store, email, password string, balance Amount) (User, Account) {
	t.Helper()
	u, a, err := s.CreateUser(email, password, balance, "")
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", email, err)
	}
	return u, a
}

// countRecords returns how many accounts and users the store holds.
func countRecords(t testing.TB, s Store) (accounts, users int) {
	t.Helper()
	a, err := s.Accounts()
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.Users()
	if err != nil {
		t.Fatal(err)
	}
	return len(a), len(u)
}

// bucketLen counts a bucket's keys.
func bucketLen(t testing.TB, s *BoltStore, name []byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCreateUserOpensAnAccount(t *testing.T) {
	cases := []struct {
		name     string
		balance  Amount
		wantRows int
	}{
		{"a user with no starting balance gets an empty account", 0, 0},
		{"a user's starting balance is the account's opening credit", 5 * Dollar, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clock, _ := openUserStore(t)
			u, a, err := s.CreateUser("  Ann.Lee@Example.COM\t", "hunter2hunter2", tc.balance, "")
			if err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			if !strings.HasPrefix(u.ID, "user_") || len(u.ID) != len("user_")+16 {
				t.Errorf("user id %q is not user_ + 16 characters", u.ID)
			}
			if u.Email != "ann.lee@example.com" || u.AccountID != a.ID || u.State != UserActive ||
				!u.CreatedAt.Equal(clock.Now()) || u.LastLoginAt != nil {
				t.Errorf("CreateUser returned user %+v", u)
			}
			if !strings.HasPrefix(a.ID, "acct_") || a.Name != "ann.lee@example.com" || a.Balance != tc.balance ||
				a.State != AccountActive || !a.CreatedAt.Equal(clock.Now()) {
				t.Errorf("CreateUser returned account %+v", a)
			}
			got, err := s.User(u.ID)
			if err != nil || got.ID != u.ID || got.Email != u.Email || got.AccountID != a.ID || got.State != UserActive {
				t.Errorf("User(%s) = %+v, %v", u.ID, got, err)
			}
			stored, err := s.Account(a.ID)
			if err != nil || stored.Balance != tc.balance || stored.Name != a.Name {
				t.Errorf("Account(%s) = %+v, %v", a.ID, stored, err)
			}
			rows := allLedger(t, s, a.ID)
			if len(rows) != tc.wantRows {
				t.Fatalf("ledger has %d rows, want %d: %+v", len(rows), tc.wantRows, rows)
			}
			if tc.wantRows == 1 {
				r := rows[0]
				if r.Seq != 1 || r.Kind != EntryCredit || r.Amount != tc.balance || r.Balance != tc.balance || r.Note != "opening balance" {
					t.Errorf("opening row %+v", r)
				}
			}
			if r := mustAudit(t, s); !r.OK || r.Accounts != 1 {
				t.Errorf("audit after sign-up: %+v", r)
			}
		})
	}
}

func TestCreateUserRefusesATakenEmail(t *testing.T) {
	s, _, _ := openUserStore(t)
	first, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", Dollar)
	for _, email := range []string{"ann@example.com", "ANN@example.com", "  ann@EXAMPLE.com\n", "\tAnn@Example.Com "} {
		t.Run(fmt.Sprintf("%q is taken", email), func(t *testing.T) {
			u, a, err := s.CreateUser(email, "another password", Dollar, "")
			if !errors.Is(err, ErrEmailTaken) {
				t.Fatalf("CreateUser(%q) = %+v, %+v, %v; want ErrEmailTaken", email, u, a, err)
			}
			if accounts, users := countRecords(t, s); accounts != 1 || users != 1 {
				t.Errorf("a refused sign-up left %d accounts and %d users, want 1 and 1", accounts, users)
			}
		})
	}
	t.Run("the first user still logs in with its own password", func(t *testing.T) {
		u, err := s.Login("ann@example.com", "hunter2hunter2")
		if err != nil || u.ID != first.ID {
			t.Errorf("Login = %+v, %v", u, err)
		}
		if _, err := s.Login("ann@example.com", "another password"); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("the refused sign-up's password logs in: %v", err)
		}
	})
}

func TestCreateUserRefusesInvalidInput(t *testing.T) {
	s, _, _ := openUserStore(t)
	cases := []struct {
		name, email, password string
		balance               Amount
	}{
		{"an empty email is refused", "", "hunter2hunter2", 0},
		{"an email of spaces is refused", "   ", "hunter2hunter2", 0},
		{"an email without @ is refused", "ann.example.com", "hunter2hunter2", 0},
		{"an email without a local part is refused", "@example.com", "hunter2hunter2", 0},
		{"an email without a domain is refused", "ann@", "hunter2hunter2", 0},
		{"an email with two @ is refused", "ann@b@example.com", "hunter2hunter2", 0},
		{"an email with a space inside is refused", "ann lee@example.com", "hunter2hunter2", 0},
		{"an email with a NUL is refused", "ann@exa\x00mple.com", "hunter2hunter2", 0},
		{"an email with a newline inside is refused", "ann@example.com\nBcc: x@y", "hunter2hunter2", 0},
		{"an email with a zero-width space is refused", "ann\u200b@example.com", "hunter2hunter2", 0},
		{"an email that is not UTF-8 is refused", "ann\xff@example.com", "hunter2hunter2", 0},
		{"an email over 254 bytes is refused", strings.Repeat("a", 243) + "@example.com", "hunter2hunter2", 0},
		{"a password of 7 bytes is refused", "ann@example.com", "1234567", 0},
		{"an empty password is refused", "ann@example.com", "", 0},
		{"a password over 1024 bytes is refused", "ann@example.com", strings.Repeat("p", 1025), 0},
		{"a negative starting balance is refused", "ann@example.com", "hunter2hunter2", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.hashes.Load()
			u, a, err := s.CreateUser(tc.email, tc.password, tc.balance, "")
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("CreateUser = %+v, %+v, %v; want an error wrapping ErrInvalid", u, a, err)
			}
			if n := s.hashes.Load() - before; n != 0 {
				t.Errorf("invalid input cost %d password hashes", n)
			}
		})
	}
	if accounts, users := countRecords(t, s); accounts != 0 || users != 0 {
		t.Fatalf("refused sign-ups left %d accounts and %d users", accounts, users)
	}
	for _, b := range [][]byte{bucketUserEmails, bucketPasswords, bucketLedger} {
		if n := bucketLen(t, s, b); n != 0 {
			t.Errorf("refused sign-ups left %d records in %s", n, b)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	long := strings.Repeat("a", 242) + "@example.com" // 254 bytes
	cases := []struct {
		in, want string
	}{
		{"ann@example.com", "ann@example.com"},
		{"  Ann@Example.COM  ", "ann@example.com"},
		{"\tANN+tag@sub.example.org\r\n", "ann+tag@sub.example.org"},
		{"ann@localhost", "ann@localhost"},
		{"Zoë@exämple.de", "zoë@exämple.de"},
		{long, long},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q normalizes to %q", tc.in, tc.want), func(t *testing.T) {
			got, err := NormalizeEmail(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("NormalizeEmail(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
	t.Run("an email of 255 bytes is refused", func(t *testing.T) {
		if got, err := NormalizeEmail("a" + long); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeEmail = %q, %v", got, err)
		}
	})
}

func TestValidatePassword(t *testing.T) {
	cases := []struct {
		name string
		pw   string
		ok   bool
	}{
		{"7 bytes are too few", "1234567", false},
		{"8 bytes are enough", "12345678", true},
		{"1024 bytes are allowed", strings.Repeat("p", 1024), true},
		{"1025 bytes are too many", strings.Repeat("p", 1025), false},
		{"four 2-byte characters count as 8 bytes", "éééé", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePassword(tc.pw)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("ValidatePassword(%d bytes) = %v", len(tc.pw), err)
			}
		})
	}
}

func TestAUserWithALongEmailGetsAnAccountNameThatFits(t *testing.T) {
	s, _, _ := openUserStore(t)
	email := strings.Repeat("é", 110) + "@example.com" // 232 bytes
	u, a := mustCreateUser(t, s, email, "hunter2hunter2", 0)
	if u.Email != email {
		t.Errorf("email %q", u.Email)
	}
	if len(a.Name) > 200 || !strings.HasPrefix(email, a.Name) || len(a.Name) < 199 {
		t.Errorf("account name %q (%d bytes) is not the email cut to 200 bytes at a character boundary", a.Name, len(a.Name))
	}
}

func TestLogin(t *testing.T) {
	s, clock, _ := openUserStore(t)
	ann, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	bob, _ := mustCreateUser(t, s, "bob@example.com", "bobs password", 0)
	if _, err := s.SetUserState(bob.ID, UserDisabled); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, email, password string
		want                  error
		wantID                string
	}{
		{"the right password logs in", "ann@example.com", "hunter2hunter2", nil, ann.ID},
		{"the email is matched whatever its case and spaces", " ANN@example.com ", "hunter2hunter2", nil, ann.ID},
		{"a wrong password is bad credentials", "ann@example.com", "hunter2hunter3", ErrBadCredentials, ""},
		{"the password is matched exactly", "ann@example.com", "HUNTER2HUNTER2", ErrBadCredentials, ""},
		{"an unknown email is bad credentials", "carl@example.com", "hunter2hunter2", ErrBadCredentials, ""},
		{"a malformed email is bad credentials", "ann", "hunter2hunter2", ErrBadCredentials, ""},
		{"a password too long to be anyone's is bad credentials", "ann@example.com", strings.Repeat("p", 1025), ErrBadCredentials, ""},
		{"a disabled user with the right password is told so", "bob@example.com", "bobs password", ErrUserDisabled, ""},
		{"a disabled user with a wrong password is bad credentials", "bob@example.com", "not bobs password", ErrBadCredentials, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			at := clock.Advance(time.Minute)
			u, err := s.Login(tc.email, tc.password)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || u.ID != "" {
					t.Fatalf("Login = %+v, %v; want %v", u, err, tc.want)
				}
				return
			}
			if err != nil || u.ID != tc.wantID || u.LastLoginAt == nil || !u.LastLoginAt.Equal(at) {
				t.Fatalf("Login = %+v, %v; want user %s logged in at %v", u, err, tc.wantID, at)
			}
			stored, err := s.User(u.ID)
			if err != nil || stored.LastLoginAt == nil || !stored.LastLoginAt.Equal(at) {
				t.Errorf("stored user %+v, %v; want last_login_at %v", stored, err, at)
			}
		})
	}
	t.Run("a failed log-in does not change the last log-in time", func(t *testing.T) {
		before, _ := s.User(ann.ID)
		clock.Advance(time.Minute)
		if _, err := s.Login("ann@example.com", "wrong password"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
		after, _ := s.User(ann.ID)
		if !after.LastLoginAt.Equal(*before.LastLoginAt) {
			t.Errorf("last_login_at moved from %v to %v", before.LastLoginAt, after.LastLoginAt)
		}
	})
	t.Run("a re-enabled user logs in again", func(t *testing.T) {
		if _, err := s.SetUserState(bob.ID, UserActive); err != nil {
			t.Fatal(err)
		}
		if u, err := s.Login("bob@example.com", "bobs password"); err != nil || u.ID != bob.ID {
			t.Errorf("Login = %+v, %v", u, err)
		}
	})
}

func TestLoginCostsOneHashWhetherOrNotTheEmailExists(t *testing.T) {
	s, _, _ := openUserStore(t)
	mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	// The first unknown email also makes the dummy hash, once.
	if _, err := s.Login("warm@example.com", "hunter2hunter2"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	cases := []struct {
		name, email, password string
	}{
		{"an unknown email costs one hash", "carl@example.com", "hunter2hunter2"},
		{"a wrong password costs one hash", "ann@example.com", "hunter2hunter3"},
		{"the right password costs one hash", "ann@example.com", "hunter2hunter2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.hashes.Load()
			s.Login(tc.email, tc.password)
			if n := s.hashes.Load() - before; n != 1 {
				t.Errorf("Login computed %d hashes, want 1", n)
			}
		})
	}
}

func TestConcurrentLoginsShareTheHashingSlots(t *testing.T) {
	s, _, _ := openUserStore(t)
	mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	var wg sync.WaitGroup
	errs := make(chan error, 3*cap(s.hashSlots)+3)
	for i := range cap(errs) {
		wg.Go(func() {
			pw := "hunter2hunter2"
			if i%3 == 1 {
				pw = "wrong password"
			}
			email := "ann@example.com"
			if i%3 == 2 {
				email = fmt.Sprintf("nobody%d@example.com", i)
			}
			_, err := s.Login(email, pw)
			if (i%3 == 0 && err != nil) || (i%3 != 0 && !errors.Is(err, ErrBadCredentials)) {
				errs <- fmt.Errorf("login %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(s.hashSlots); n != 0 {
		t.Errorf("%d hashing slots still taken", n)
	}
}

func TestLoginIsBusyWhenEveryHashingSlotStaysTaken(t *testing.T) {
	s, _, _ := openUserStore(t)
	mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	s.hashWait = time.Millisecond
	for range cap(s.hashSlots) {
		s.hashSlots <- struct{}{}
	}
	before := s.hashes.Load()
	if _, err := s.Login("ann@example.com", "hunter2hunter2"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Login with every slot taken: %v, want ErrBusy", err)
	}
	if _, _, err := s.CreateUser("bob@example.com", "hunter2hunter2", 0, ""); !errors.Is(err, ErrBusy) {
		t.Fatalf("CreateUser with every slot taken: %v, want ErrBusy", err)
	}
	if n := s.hashes.Load() - before; n != 0 {
		t.Errorf("%d hashes computed without a slot", n)
	}
	if _, users := countRecords(t, s); users != 1 {
		t.Errorf("%d users after a busy sign-up, want 1", users)
	}
	for range cap(s.hashSlots) {
		<-s.hashSlots
	}
	if _, err := s.Login("ann@example.com", "hunter2hunter2"); err != nil {
		t.Fatalf("Login once slots are free: %v", err)
	}
}

func TestASignUpWithAnInviteThatCannotWorkCostsNoHash(t *testing.T) {
	s, clock, _ := openUserStore(t)
	expires := clock.Now().Add(time.Hour)
	_, expiring, err := s.CreateInvite(InviteSpec{ExpiresAt: &expires})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	for _, code := range []string{"inv_unknown", expiring} {
		before := s.hashes.Load()
		if _, _, err := s.CreateUser("ann@example.com", "hunter2hunter2", 0, code); !errors.Is(err, ErrInviteInvalid) {
			t.Fatalf("CreateUser with %q: %v, want ErrInviteInvalid", code, err)
		}
		if n := s.hashes.Load() - before; n != 0 {
			t.Errorf("a sign-up with a dead invite computed %d hashes", n)
		}
	}
}

func TestUsersListsOldestFirst(t *testing.T) {
	s, clock, _ := openUserStore(t)
	var want []string
	for _, name := range []string{"zed", "amy", "kim", "bob"} {
		u, _ := mustCreateUser(t, s, name+"@example.com", "hunter2hunter2", 0)
		want = append(want, u.ID)
		clock.Advance(time.Second)
	}
	users, err := s.Users()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range users {
		got = append(got, u.ID)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Users = %v, want %v", got, want)
	}
}

func TestSetUserState(t *testing.T) {
	s, _, _ := openUserStore(t)
	u, a := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", Dollar)
	key, _ := mustCreateKey(t, s, a.ID, KeySpec{Name: "ci"})

	got, err := s.SetUserState(u.ID, UserDisabled)
	if err != nil || got.State != UserDisabled {
		t.Fatalf("SetUserState(disabled) = %+v, %v", got, err)
	}
	if stored, _ := s.User(u.ID); stored.State != UserDisabled {
		t.Errorf("stored state %q after disabling", stored.State)
	}
	t.Run("disabling a user leaves its account and keys alone", func(t *testing.T) {
		acct, err := s.Account(a.ID)
		if err != nil || acct.State != AccountActive || acct.Balance != Dollar {
			t.Errorf("account after disabling its user: %+v, %v", acct, err)
		}
		k, err := s.Key(key.ID)
		if err != nil || k.State(time.Now()) != KeyActive {
			t.Errorf("key after disabling its user: %+v, %v", k, err)
		}
	})
	t.Run("an unknown state is refused", func(t *testing.T) {
		if _, err := s.SetUserState(u.ID, "banned"); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetUserState(banned) = %v", err)
		}
		if stored, _ := s.User(u.ID); stored.State != UserDisabled {
			t.Errorf("state %q after a refused change", stored.State)
		}
	})
	t.Run("an unknown user is not found", func(t *testing.T) {
		if _, err := s.SetUserState("user_0000000000000000", UserActive); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetUserState(unknown) = %v", err)
		}
		if _, err := s.User("user_0000000000000000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("User(unknown) = %v", err)
		}
	})
	if got, err := s.SetUserState(u.ID, UserActive); err != nil || got.State != UserActive {
		t.Fatalf("SetUserState(active) = %+v, %v", got, err)
	}
}

func TestAuditIgnoresUsersSessionsAndInvites(t *testing.T) {
	s, clock, _ := openUserStore(t)
	mustCreateAccount(t, s, "plain", 3*Dollar)
	u, a := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 2*Dollar)
	mustCreateUser(t, s, "bob@example.com", "hunter2hunter2", 0)
	clock.Advance(time.Minute)
	mustSettle(t, s, Charge{RequestID: "r1", AccountID: a.ID, Model: "m", Usage: Usage{PromptTokens: 10}, Cost: Dollar / 4})
	if _, _, err := s.CreateSession(u.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateInvite(InviteSpec{Note: "spare"}); err != nil {
		t.Fatal(err)
	}
	r := mustAudit(t, s)
	if !r.OK || r.Accounts != 3 || r.Rows != 3 || r.Charges != 1 {
		t.Errorf("audit %+v", r)
	}
}

// FuzzNormalizeEmail checks that NormalizeEmail never panics, that what it
// accepts stays within its promises, and that normalizing is idempotent.
func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"ann@example.com", "  Ann@Example.COM ", "a@b@c", "ann\xff@x", "İ@example.com", "ann\u200b@x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := NormalizeEmail(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(e) > maxEmailLen || strings.Count(e, "@") != 1 || e[0] == '@' || e[len(e)-1] == '@' || strings.ContainsAny(e, " \t\r\n\x00") {
			t.Fatalf("NormalizeEmail(%q) = %q breaks its promises", s, e)
		}
		again, err := NormalizeEmail(e)
		if err != nil || again != e {
			t.Fatalf("NormalizeEmail(%q) = %q, %v; not idempotent", e, again, err)
		}
	})
}
