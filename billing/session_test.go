package billing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustCreateSession(t testing.TB, s Store, userID string, lifetime time.Duration) (Session, string) {
	t.Helper()
	sess, token, err := s.CreateSession(userID, lifetime)
	if err != nil {
		t.Fatalf("CreateSession(%s): %v", userID, err)
	}
	return sess, token
}

func TestCreateSession(t *testing.T) {
	s, clock, _ := openUserStore(t)
	u, a := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	sess, token := mustCreateSession(t, s, u.ID, 12*time.Hour)
	for name, tok := range map[string]string{"token": token, "csrf": sess.CSRF} {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) != 32 {
			t.Errorf("%s %q is not 32 bytes of unpadded base64url (%v)", name, tok, err)
		}
	}
	if token == sess.CSRF {
		t.Error("the CSRF token is the session token")
	}
	if sess.UserID != u.ID || sess.AccountID != a.ID || !sess.CreatedAt.Equal(clock.Now()) ||
		!sess.ExpiresAt.Equal(clock.Now().Add(12*time.Hour)) {
		t.Errorf("CreateSession = %+v", sess)
	}
	got, user, err := s.SessionByToken(token)
	if err != nil || got != sess || user.ID != u.ID || user.Email != u.Email || user.AccountID != a.ID {
		t.Errorf("SessionByToken = %+v, %+v, %v; want %+v and user %s", got, user, err, sess, u.ID)
	}
	second, token2 := mustCreateSession(t, s, u.ID, time.Hour)
	if token2 == token || second.CSRF == sess.CSRF {
		t.Error("a second session repeats the first one's tokens")
	}
	if got, _, err := s.SessionByToken(token); err != nil || got != sess {
		t.Errorf("the first session is gone after a second log-in: %v", err)
	}

	cases := []struct {
		name     string
		userID   string
		lifetime time.Duration
		want     error
	}{
		{"an unknown user gets no session", "user_0000000000000000", time.Hour, ErrNotFound},
		{"a zero lifetime is refused", u.ID, 0, ErrInvalid},
		{"a negative lifetime is refused", u.ID, -time.Hour, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if sess, token, err := s.CreateSession(tc.userID, tc.lifetime); !errors.Is(err, tc.want) || token != "" {
				t.Errorf("CreateSession = %+v, %q, %v; want %v", sess, token, err, tc.want)
			}
		})
	}
	if n := bucketLen(t, s, bucketSessions); n != 2 {
		t.Errorf("%d sessions stored, want 2", n)
	}
}

func TestSessionByTokenOfUnknownTokens(t *testing.T) {
	s, _, _ := openUserStore(t)
	u, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	_, token := mustCreateSession(t, s, u.ID, time.Hour)
	other := []byte(token)
	other[0] ^= 1
	for _, tc := range []struct{ name, token string }{
		{"an empty token is not found", ""},
		{"a token of the wrong length is not found", token + "x"},
		{"a token one bit off is not found", string(other)},
		{"a CSRF-shaped random token is not found", strings.Repeat("A", 43)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if sess, _, err := s.SessionByToken(tc.token); !errors.Is(err, ErrNotFound) {
				t.Errorf("SessionByToken = %+v, %v; want ErrNotFound", sess, err)
			}
		})
	}
}

func TestSessionsExpire(t *testing.T) {
	s, clock, _ := openUserStore(t)
	u, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	_, token := mustCreateSession(t, s, u.ID, time.Hour)

	clock.Advance(time.Hour - time.Nanosecond)
	if _, _, err := s.SessionByToken(token); err != nil {
		t.Fatalf("a session a moment before expiry: %v", err)
	}
	clock.Advance(time.Nanosecond)
	if _, _, err := s.SessionByToken(token); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("a session at its expiry: %v, want ErrSessionExpired", err)
	}
	if _, _, err := s.SessionByToken(token); !errors.Is(err, ErrNotFound) {
		t.Errorf("an expired session looked up again: %v, want ErrNotFound (deleted)", err)
	}
	if n, m := bucketLen(t, s, bucketSessions), bucketLen(t, s, bucketUserSessions); n != 0 || m != 0 {
		t.Errorf("an expired session left %d records and %d index entries", n, m)
	}
}

func TestCreateSessionDeletesTheUsersExpiredSessions(t *testing.T) {
	s, clock, _ := openUserStore(t)
	ann, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	bob, _ := mustCreateUser(t, s, "bob@example.com", "hunter2hunter2", 0)
	_, short := mustCreateSession(t, s, ann.ID, time.Hour)
	_, long := mustCreateSession(t, s, ann.ID, 3*time.Hour)
	_, bobs := mustCreateSession(t, s, bob.ID, time.Hour)
	clock.Advance(2 * time.Hour)
	_, fresh := mustCreateSession(t, s, ann.ID, time.Hour)

	// Read the bucket itself: SessionByToken would delete on its own.
	if n := bucketLen(t, s, bucketSessions); n != 3 {
		t.Errorf("%d sessions stored, want 3: Ann's long and fresh ones, and Bob's expired one", n)
	}
	if n := bucketLen(t, s, bucketUserSessions); n != 3 {
		t.Errorf("%d index entries, want 3", n)
	}
	if _, _, err := s.SessionByToken(short); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ann's expired session: %v, want ErrNotFound", err)
	}
	for _, tok := range []string{long, fresh} {
		if _, _, err := s.SessionByToken(tok); err != nil {
			t.Errorf("Ann's live session: %v", err)
		}
	}
	if _, _, err := s.SessionByToken(bobs); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("Bob's session, expired but not swept: %v, want ErrSessionExpired", err)
	}
}

func TestDeleteSession(t *testing.T) {
	s, _, _ := openUserStore(t)
	u, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	_, gone := mustCreateSession(t, s, u.ID, time.Hour)
	_, kept := mustCreateSession(t, s, u.ID, time.Hour)
	if err := s.DeleteSession(gone); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if _, _, err := s.SessionByToken(gone); !errors.Is(err, ErrNotFound) {
		t.Errorf("a deleted session: %v, want ErrNotFound", err)
	}
	if _, _, err := s.SessionByToken(kept); err != nil {
		t.Errorf("the other session: %v", err)
	}
	if n := bucketLen(t, s, bucketUserSessions); n != 1 {
		t.Errorf("%d index entries, want 1", n)
	}
	for _, tok := range []string{gone, "", "nonsense"} {
		if err := s.DeleteSession(tok); err != nil {
			t.Errorf("DeleteSession(%q) of no session = %v, want nil", tok, err)
		}
	}
}

func TestDisablingAUserEndsItsSessions(t *testing.T) {
	s, _, _ := openUserStore(t)
	ann, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	bob, _ := mustCreateUser(t, s, "bob@example.com", "hunter2hunter2", 0)
	_, t1 := mustCreateSession(t, s, ann.ID, time.Hour)
	_, t2 := mustCreateSession(t, s, ann.ID, time.Hour)
	_, bobs := mustCreateSession(t, s, bob.ID, time.Hour)
	if _, err := s.SetUserState(ann.ID, UserDisabled); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{t1, t2} {
		if _, _, err := s.SessionByToken(tok); !errors.Is(err, ErrNotFound) {
			t.Errorf("a disabled user's session: %v, want ErrNotFound", err)
		}
	}
	if _, _, err := s.SessionByToken(bobs); err != nil {
		t.Errorf("another user's session: %v", err)
	}
	if n, m := bucketLen(t, s, bucketSessions), bucketLen(t, s, bucketUserSessions); n != 1 || m != 1 {
		t.Errorf("%d sessions and %d index entries left, want Bob's 1 and 1", n, m)
	}
	if _, _, err := s.CreateSession(ann.ID, time.Hour); !errors.Is(err, ErrUserDisabled) {
		t.Errorf("CreateSession for a disabled user: %v, want ErrUserDisabled", err)
	}
	if _, err := s.SetUserState(ann.ID, UserActive); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionByToken(t1); !errors.Is(err, ErrNotFound) {
		t.Errorf("re-enabling revived a session: %v", err)
	}
}

func TestASessionLeftToADisabledUserDoesNotAuthenticate(t *testing.T) {
	s, _, _ := openUserStore(t)
	u, _ := mustCreateUser(t, s, "ann@example.com", "hunter2hunter2", 0)
	_, token := mustCreateSession(t, s, u.ID, time.Hour)
	// As a restore of an older file or a bug elsewhere might leave it:
	// the user disabled, the session still there.
	err := s.db.Update(func(tx *bolt.Tx) error {
		var user User
		if err := getJSON(tx.Bucket(bucketUsers), u.ID, &user, "user"); err != nil {
			return err
		}
		user.State = UserDisabled
		return putJSON(tx.Bucket(bucketUsers), u.ID, &user)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionByToken(token); !errors.Is(err, ErrUserDisabled) {
		t.Errorf("SessionByToken = %v, want ErrUserDisabled", err)
	}
}

func TestTheFileNeverHoldsPasswordsOrTokens(t *testing.T) {
	s, _, path := openUserStore(t)
	const password = "Tr0ub4dor&3-unique-marker"
	u, _, err := s.CreateUser("ann@example.com", password, Dollar, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("ann@example.com", password); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("ann@example.com", password+"-wrong"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	sess, token := mustCreateSession(t, s, u.ID, time.Hour)
	_, gone := mustCreateSession(t, s, u.ID, time.Hour)
	if err := s.DeleteSession(gone); err != nil {
		t.Fatal(err)
	}
	_, code, err := s.CreateInvite(InviteSpec{})
	if err != nil {
		t.Fatal(err)
	}
	_, used, err := s.CreateInvite(InviteSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateUser("bob@example.com", "hunter2hunter2", 0, used); err != nil {
		t.Fatal(err)
	}

	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{
		"password": password, "session token": token, "deleted session's token": gone,
		"invite code": code, "used invite code": used,
	} {
		if bytes.Contains(file, []byte(secret)) {
			t.Errorf("the database file holds the %s", name)
		}
	}
	if !bytes.Contains(file, []byte(sess.CSRF)) {
		t.Error("the session's CSRF token is not stored: is the file being read at all?")
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			if bytes.Contains(v, []byte("argon2")) {
				t.Errorf("user record %s holds a password hash: %s", k, v)
			}
			if h := tx.Bucket(bucketPasswords).Get(k); !bytes.HasPrefix(h, []byte("$argon2id$v=19$")) {
				t.Errorf("user %s's password hash is %q", k, h)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
