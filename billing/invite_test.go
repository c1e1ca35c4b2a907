package billing

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustCreateInvite(t testing.TB, s Store, spec InviteSpec) (Invite, string) {
	t.Helper()
	inv, code, err := s.CreateInvite(spec)
	if err != nil {
		t.Fatalf("CreateInvite(%+v): %v", spec, err)
	}
	return inv, code
}

func TestSignUpWithInvites(t *testing.T) {
	s, clock, _ := openUserStore(t)
	mustCreateUser(t, s, "taken@example.com", "hunter2hunter2", 0)
	newInvite := func(t *testing.T, expiresIn time.Duration) string {
		t.Helper()
		var exp *time.Time
		if expiresIn > 0 {
			e := clock.Now().Add(expiresIn)
			exp = &e
		}
		_, code, err := s.CreateInvite(InviteSpec{Note: "for a test", ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	signUp := func(email, code string) error {
		_, _, err := s.CreateUser(email, "hunter2hunter2", Dollar, code)
		return err
	}
	// refused checks that a sign-up failed with want and created nothing.
	refused := func(t *testing.T, email, code string, want error) {
		t.Helper()
		accounts, users := countRecords(t, s)
		if err := signUp(email, code); !errors.Is(err, want) {
			t.Fatalf("CreateUser(%s, %q) = %v, want %v", email, code, err, want)
		}
		if a, u := countRecords(t, s); a != accounts || u != users {
			t.Fatalf("a refused sign-up created something: %d accounts and %d users, had %d and %d", a, u, accounts, users)
		}
	}

	t.Run("an invite lets one person sign up, once", func(t *testing.T) {
		code := newInvite(t, 0)
		if err := signUp("ann@example.com", code); err != nil {
			t.Fatalf("sign-up with a fresh invite: %v", err)
		}
		refused(t, "bob@example.com", code, ErrInviteInvalid)
	})
	t.Run("an unknown invite is refused", func(t *testing.T) {
		refused(t, "carl@example.com", "inv_"+strings.Repeat("A", 32), ErrInviteInvalid)
		refused(t, "carl@example.com", "nonsense", ErrInviteInvalid)
	})
	t.Run("an invite works until it expires", func(t *testing.T) {
		late := newInvite(t, time.Hour)
		early := newInvite(t, time.Hour)
		clock.Advance(time.Hour - time.Nanosecond)
		if err := signUp("dee@example.com", early); err != nil {
			t.Fatalf("sign-up a moment before expiry: %v", err)
		}
		clock.Advance(time.Nanosecond)
		refused(t, "eve@example.com", late, ErrInviteInvalid)
	})
	t.Run("a bad invite is refused before the email is checked", func(t *testing.T) {
		refused(t, "taken@example.com", "nonsense", ErrInviteInvalid)
	})
	t.Run("a sign-up refused for a taken email leaves its invite unused", func(t *testing.T) {
		code := newInvite(t, 0)
		refused(t, "TAKEN@example.com", code, ErrEmailTaken)
		if err := signUp("fay@example.com", code); err != nil {
			t.Fatalf("the invite is spent: %v", err)
		}
	})
	t.Run("a used invite records who used it and when", func(t *testing.T) {
		code := newInvite(t, 0)
		at := clock.Advance(time.Minute)
		u, _, err := s.CreateUser("gus@example.com", "hunter2hunter2", 0, code)
		if err != nil {
			t.Fatal(err)
		}
		inv := storedInvite(t, s, code)
		if inv.UsedBy != u.ID || inv.UsedAt == nil || !inv.UsedAt.Equal(at) || inv.Note != "for a test" {
			t.Errorf("stored invite %+v", inv)
		}
	})
}

// storedInvite reads an invite record by its code.
func storedInvite(t testing.TB, s *BoltStore, code string) Invite {
	t.Helper()
	var inv Invite
	err := s.db.View(func(tx *bolt.Tx) error {
		h := HashSecret(code)
		id := tx.Bucket(bucketInviteHashes).Get(h[:])
		if id == nil {
			return fmt.Errorf("no invite has code %q", code)
		}
		return getJSON(tx.Bucket(bucketInvites), string(id), &inv, "invite")
	})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestCreateInvite(t *testing.T) {
	s, clock, _ := openUserStore(t)
	exp := clock.Now().Add(48 * time.Hour).In(time.FixedZone("X", 3600))
	inv, code, err := s.CreateInvite(InviteSpec{Note: "for Ann", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if len(code) != len(InvitePrefix)+32 || !strings.HasPrefix(code, InvitePrefix) {
		t.Errorf("code %q is not inv_ + 32 characters", code)
	}
	for _, c := range []byte(code[len(InvitePrefix):]) {
		if !isBase62(c) {
			t.Fatalf("code %q has a character outside base62", code)
		}
	}
	if !strings.HasPrefix(inv.ID, "invite_") || len(inv.ID) != len("invite_")+16 {
		t.Errorf("invite id %q is not invite_ + 16 characters", inv.ID)
	}
	if inv.Note != "for Ann" || !inv.CreatedAt.Equal(clock.Now()) || inv.ExpiresAt == nil || !inv.ExpiresAt.Equal(exp) ||
		inv.ExpiresAt.Location() != time.UTC || inv.UsedBy != "" || inv.UsedAt != nil || inv.RevokedAt != nil ||
		inv.AccountID != "" || inv.State(clock.Now()) != InviteUnused {
		t.Errorf("CreateInvite = %+v", inv)
	}
	if stored := storedInvite(t, s, code); stored.ID != inv.ID || stored.Note != inv.Note || !stored.ExpiresAt.Equal(exp) {
		t.Errorf("stored invite %+v", stored)
	}
	_, other, err := s.CreateInvite(InviteSpec{})
	if err != nil || other == code {
		t.Errorf("second invite %q, %v", other, err)
	}

	past := clock.Now()
	cases := []struct {
		name      string
		note      string
		expiresAt *time.Time
	}{
		{"a note over 1000 bytes is refused", strings.Repeat("n", 1001), nil},
		{"an expiry that is now is refused", "", &past},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, code, err := s.CreateInvite(InviteSpec{Note: tc.note, ExpiresAt: tc.expiresAt}); !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateInvite = %q, %v; want ErrInvalid", code, err)
			}
		})
	}
	if n, h := bucketLen(t, s, bucketInvites), bucketLen(t, s, bucketInviteHashes); n != 2 || h != 2 {
		t.Errorf("%d invites and %d code hashes stored, want 2 and 2", n, h)
	}
}

func TestCreateInviteForAnUnknownAccountIsNotFound(t *testing.T) {
	s, _, _ := openUserStore(t)
	inv, code, err := s.CreateInvite(InviteSpec{Note: "for Acme", AccountID: "acct_0000000000000000"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("CreateInvite = %+v, %q, %v; want ErrNotFound", inv, code, err)
	}
	if n, h := bucketLen(t, s, bucketInvites), bucketLen(t, s, bucketInviteHashes); n != 0 || h != 0 {
		t.Errorf("a refused invite left %d invites and %d code hashes", n, h)
	}
}

func TestBoundInviteJoinsAnExistingAccount(t *testing.T) {
	s, clock, _ := openUserStore(t)
	acme := mustCreateAccount(t, s, "Acme Corp", 5*Dollar)
	clock.Advance(time.Minute)
	first, firstCode := mustCreateInvite(t, s, InviteSpec{Note: "for Ann at Acme", AccountID: acme.ID})
	_, secondCode := mustCreateInvite(t, s, InviteSpec{Note: "for Bob at Acme", AccountID: acme.ID})
	if first.AccountID != acme.ID {
		t.Fatalf("CreateInvite = %+v, want account %s", first, acme.ID)
	}
	rowsBefore := allLedger(t, s, acme.ID)

	at := clock.Advance(time.Minute)
	ann, acct, err := s.CreateUser("ann@acme.example", "hunter2hunter2", 3*Dollar, firstCode)
	if err != nil {
		t.Fatalf("sign-up with a bound invite: %v", err)
	}
	bob, _, err := s.CreateUser("bob@acme.example", "hunter2hunter2", 3*Dollar, secondCode)
	if err != nil {
		t.Fatalf("second sign-up into the same account: %v", err)
	}

	t.Run("the user owns the invite's account", func(t *testing.T) {
		if ann.AccountID != acme.ID || bob.AccountID != acme.ID {
			t.Errorf("users' accounts %s and %s, want %s", ann.AccountID, bob.AccountID, acme.ID)
		}
		if acct.ID != acme.ID || acct.Name != "Acme Corp" || acct.Balance != 5*Dollar || !acct.CreatedAt.Equal(acme.CreatedAt) {
			t.Errorf("CreateUser returned account %+v, want Acme as it was", acct)
		}
		for _, u := range []User{ann, bob} {
			if stored, err := s.User(u.ID); err != nil || stored.AccountID != acme.ID {
				t.Errorf("User(%s) = %+v, %v", u.ID, stored, err)
			}
		}
	})
	t.Run("no account is created and the balance is not credited", func(t *testing.T) {
		if accounts, users := countRecords(t, s); accounts != 1 || users != 2 {
			t.Errorf("%d accounts and %d users, want 1 and 2", accounts, users)
		}
		if got, err := s.Account(acme.ID); err != nil || got.Balance != 5*Dollar {
			t.Errorf("Acme after two sign-ups: %+v, %v; want its 5.00 unchanged", got, err)
		}
		if rows := allLedger(t, s, acme.ID); len(rows) != len(rowsBefore) {
			t.Errorf("Acme's ledger has %d rows, had %d: %+v", len(rows), len(rowsBefore), rows)
		}
		if n := bucketLen(t, s, bucketLedger); n != 1 {
			t.Errorf("%d ledgers stored, want Acme's only", n)
		}
		if r := mustAudit(t, s); !r.OK || r.Accounts != 1 || r.Rows != 1 {
			t.Errorf("audit %+v", r)
		}
	})
	t.Run("the invite records who used it", func(t *testing.T) {
		inv := storedInvite(t, s, firstCode)
		if inv.UsedBy != ann.ID || inv.UsedAt == nil || !inv.UsedAt.Equal(at) || inv.State(clock.Now()) != InviteUsed {
			t.Errorf("stored invite %+v", inv)
		}
	})
	t.Run("both users log in and their sessions carry the account", func(t *testing.T) {
		for _, u := range []User{ann, bob} {
			got, err := s.Login(u.Email, "hunter2hunter2")
			if err != nil || got.ID != u.ID || got.AccountID != acme.ID {
				t.Fatalf("Login(%s) = %+v, %v", u.Email, got, err)
			}
			sess, token := mustCreateSession(t, s, u.ID, time.Hour)
			if sess.AccountID != acme.ID || sess.UserID != u.ID {
				t.Errorf("session of %s: %+v", u.Email, sess)
			}
			read, user, err := s.SessionByToken(token)
			if err != nil || read.AccountID != acme.ID || user.ID != u.ID {
				t.Errorf("SessionByToken of %s = %+v, %+v, %v", u.Email, read, user, err)
			}
		}
	})
	t.Run("disabling one user leaves the other's sessions alone", func(t *testing.T) {
		_, annToken := mustCreateSession(t, s, ann.ID, time.Hour)
		_, bobToken := mustCreateSession(t, s, bob.ID, time.Hour)
		if _, err := s.SetUserState(ann.ID, UserDisabled); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.SessionByToken(annToken); !errors.Is(err, ErrNotFound) {
			t.Errorf("Ann's session after disabling Ann: %v, want ErrNotFound", err)
		}
		if sess, _, err := s.SessionByToken(bobToken); err != nil || sess.AccountID != acme.ID {
			t.Errorf("Bob's session after disabling Ann: %+v, %v", sess, err)
		}
		if got, err := s.Account(acme.ID); err != nil || got.State != AccountActive {
			t.Errorf("Acme after disabling Ann: %+v, %v", got, err)
		}
	})
}

func TestRevokeInvite(t *testing.T) {
	s, clock, _ := openUserStore(t)
	acme := mustCreateAccount(t, s, "Acme Corp", 0)
	// refused checks that a sign-up with code fails with ErrInviteInvalid
	// and creates nothing.
	refused := func(t *testing.T, email, code string) {
		t.Helper()
		accounts, users := countRecords(t, s)
		if u, a, err := s.CreateUser(email, "hunter2hunter2", Dollar, code); !errors.Is(err, ErrInviteInvalid) {
			t.Fatalf("CreateUser(%s) = %+v, %+v, %v; want ErrInviteInvalid", email, u, a, err)
		}
		if a, u := countRecords(t, s); a != accounts || u != users {
			t.Fatalf("a refused sign-up created something: %d accounts and %d users, had %d and %d", a, u, accounts, users)
		}
	}

	cases := []struct {
		name string
		spec InviteSpec
	}{
		{"a revoked invite is refused and creates nothing", InviteSpec{Note: "for Ann"}},
		{"a revoked bound invite adds no user to its account", InviteSpec{Note: "for Ann at Acme", AccountID: acme.ID}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inv, code := mustCreateInvite(t, s, tc.spec)
			at := clock.Advance(time.Minute)
			got, err := s.RevokeInvite(inv.ID)
			if err != nil || got.ID != inv.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(at) || got.State(clock.Now()) != InviteRevoked {
				t.Fatalf("RevokeInvite = %+v, %v", got, err)
			}
			refused(t, fmt.Sprintf("user%d@example.com", i), code)
			if stored := storedInvite(t, s, code); stored.UsedBy != "" || stored.RevokedAt == nil {
				t.Errorf("stored invite after a refused sign-up: %+v", stored)
			}
		})
	}
	t.Run("revoking twice keeps the first revocation time", func(t *testing.T) {
		inv, _ := mustCreateInvite(t, s, InviteSpec{})
		first, err := s.RevokeInvite(inv.ID)
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Hour)
		again, err := s.RevokeInvite(inv.ID)
		if err != nil || again.RevokedAt == nil || !again.RevokedAt.Equal(*first.RevokedAt) {
			t.Errorf("second RevokeInvite = %+v, %v; want revoked at %v", again, err, first.RevokedAt)
		}
	})
	t.Run("an expired invite can be revoked", func(t *testing.T) {
		exp := clock.Now().Add(time.Minute)
		inv, _ := mustCreateInvite(t, s, InviteSpec{ExpiresAt: &exp})
		clock.Advance(time.Hour)
		if got, err := s.RevokeInvite(inv.ID); err != nil || got.State(clock.Now()) != InviteRevoked {
			t.Errorf("RevokeInvite of an expired invite = %+v, %v", got, err)
		}
	})
	t.Run("revoking a used invite is refused and changes nothing", func(t *testing.T) {
		inv, code := mustCreateInvite(t, s, InviteSpec{})
		u, _, err := s.CreateUser("used@example.com", "hunter2hunter2", 0, code)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.RevokeInvite(inv.ID); !errors.Is(err, ErrInvalid) {
			t.Errorf("RevokeInvite of a used invite = %+v, %v; want ErrInvalid", got, err)
		}
		if stored := storedInvite(t, s, code); stored.UsedBy != u.ID || stored.RevokedAt != nil {
			t.Errorf("stored invite after a refused revocation: %+v", stored)
		}
		if got, err := s.User(u.ID); err != nil || got.State != UserActive {
			t.Errorf("the invite's user after a refused revocation: %+v, %v", got, err)
		}
	})
	t.Run("an unknown invite is not found", func(t *testing.T) {
		if got, err := s.RevokeInvite("invite_0000000000000000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("RevokeInvite(unknown) = %+v, %v; want ErrNotFound", got, err)
		}
	})
}

func TestInvitesAreListedWithoutCodes(t *testing.T) {
	s, clock, path := openUserStore(t)
	acme := mustCreateAccount(t, s, "Acme Corp", 0)
	soon := clock.Now().Add(time.Minute)
	type made struct {
		inv  Invite
		code string
		want InviteState
	}
	var invites []made
	add := func(spec InviteSpec, want InviteState) made {
		inv, code := mustCreateInvite(t, s, spec)
		invites = append(invites, made{inv, code, want})
		clock.Advance(time.Second)
		return invites[len(invites)-1]
	}
	add(InviteSpec{Note: "never used"}, InviteUnused)
	used := add(InviteSpec{Note: "used"}, InviteUsed)
	revoked := add(InviteSpec{Note: "revoked"}, InviteRevoked)
	add(InviteSpec{Note: "expired", ExpiresAt: &soon}, InviteExpired)
	bound := add(InviteSpec{Note: "bound and used", AccountID: acme.ID}, InviteUsed)
	if _, _, err := s.CreateUser("ann@example.com", "hunter2hunter2", 0, used.code); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateUser("bob@example.com", "hunter2hunter2", 0, bound.code); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeInvite(revoked.inv.ID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	t.Run("invites are listed oldest first with their ids and states", func(t *testing.T) {
		got, err := s.Invites()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(invites) {
			t.Fatalf("Invites listed %d, want %d: %+v", len(got), len(invites), got)
		}
		for i, m := range invites {
			if got[i].ID != m.inv.ID || got[i].Note != m.inv.Note || got[i].State(clock.Now()) != m.want {
				t.Errorf("invite %d listed as %+v (%s), want %s (%s)", i, got[i], got[i].State(clock.Now()), m.inv.ID, m.want)
			}
		}
		if got[4].AccountID != acme.ID || got[4].UsedBy == "" {
			t.Errorf("the bound invite listed as %+v", got[4])
		}
	})
	t.Run("no invites is an empty list", func(t *testing.T) {
		empty, _, _ := openUserStore(t)
		if got, err := empty.Invites(); err != nil || len(got) != 0 {
			t.Errorf("Invites of an empty store = %+v, %v", got, err)
		}
	})
	t.Run("the database file holds no invite code", func(t *testing.T) {
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range invites {
			if bytes.Contains(file, []byte(m.code)) || bytes.Contains(file, []byte(m.code[len(InvitePrefix):])) {
				t.Errorf("the database file holds the code of the %q invite", m.inv.Note)
			}
			if !bytes.Contains(file, []byte(m.inv.ID)) {
				t.Errorf("the database file lacks invite %s: is the file being read at all?", m.inv.ID)
			}
		}
	})
}
