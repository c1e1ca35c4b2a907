package billing

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrSessionExpired is returned for a session token whose session has
// expired; the session is gone once it has been said.
var ErrSessionExpired = errors.New("session expired")

// Session is a logged-in user's session in the dashboard. The record never
// holds its token: the store indexes it by the token's SHA-256, so a copy
// of the database cannot be used to log in.
type Session struct {
	UserID    string `json:"user_id"`
	AccountID string `json:"account_id"`
	// CSRF is a random token the session's forms must send back.
	CSRF      string    `json:"csrf"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// tokenBytes is the entropy of session and CSRF tokens; encoded, a token is
// tokenLen characters of unpadded base64url.
const (
	tokenBytes = 32
	tokenLen   = (tokenBytes*8 + 5) / 6
)

// newToken returns 32 random bytes from r in unpadded base64url.
func newToken(r io.Reader) (string, error) {
	var b [tokenBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// userSessionKey is a session's key in the user_sessions index.
func userSessionKey(userID string, hash []byte) []byte {
	return []byte(userID + "/" + hex.EncodeToString(hash))
}

// CreateSession starts a session for an active user, lasting lifetime, and
// returns it with its token. The token is returned here and nowhere else:
// only its SHA-256 is stored. The same transaction deletes the user's
// sessions that have expired, so they do not pile up.
func (s *BoltStore) CreateSession(userID string, lifetime time.Duration) (Session, string, error) {
	if lifetime <= 0 {
		return Session{}, "", fmt.Errorf("%w: a session's lifetime must be positive", ErrInvalid)
	}
	token, err := newToken(s.rand)
	if err != nil {
		return Session{}, "", err
	}
	csrf, err := newToken(s.rand)
	if err != nil {
		return Session{}, "", err
	}
	hash := sha256.Sum256([]byte(token))
	now := s.now().UTC()
	sess := Session{UserID: userID, CSRF: csrf, CreatedAt: now, ExpiresAt: now.Add(lifetime)}
	err = s.update(func(tx *bolt.Tx) error {
		var user User
		if err := getJSON(tx.Bucket(bucketUsers), userID, &user, "user"); err != nil {
			return err
		}
		if user.State != UserActive {
			return fmt.Errorf("user %s: %w", userID, ErrUserDisabled)
		}
		sess.AccountID = user.AccountID
		expired := func(old *Session) bool { return !now.Before(old.ExpiresAt) }
		if err := deleteSessions(tx, userID, expired); err != nil {
			return err
		}
		sessions := tx.Bucket(bucketSessions)
		if sessions.Get(hash[:]) != nil {
			return fmt.Errorf("session token collided; try again")
		}
		if err := putJSON(sessions, string(hash[:]), &sess); err != nil {
			return err
		}
		return tx.Bucket(bucketUserSessions).Put(userSessionKey(userID, hash[:]), nil)
	})
	if err != nil {
		return Session{}, "", fmt.Errorf("creating session: %w", err)
	}
	return sess, token, nil
}

// SessionByToken finds the session a token belongs to and its user, read
// in one transaction. An unknown token is ErrNotFound; an expired session
// is ErrSessionExpired, and is deleted; a disabled user's session is
// ErrUserDisabled.
func (s *BoltStore) SessionByToken(token string) (Session, User, error) {
	if len(token) != tokenLen {
		// Not a token this store made: no need to look.
		return Session{}, User{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	hash := sha256.Sum256([]byte(token))
	var (
		sess Session
		user User
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(hash[:])
		if v == nil {
			return fmt.Errorf("session: %w", ErrNotFound)
		}
		if err := json.Unmarshal(v, &sess); err != nil {
			return fmt.Errorf("decoding session: %w", err)
		}
		return getJSON(tx.Bucket(bucketUsers), sess.UserID, &user, "user")
	})
	if err != nil {
		return Session{}, User{}, err
	}
	if !s.now().Before(sess.ExpiresAt) {
		if err := s.deleteSession(hash[:]); err != nil {
			return Session{}, User{}, err
		}
		return Session{}, User{}, fmt.Errorf("session of user %s: %w", sess.UserID, ErrSessionExpired)
	}
	if user.State != UserActive {
		return Session{}, User{}, fmt.Errorf("user %s: %w", user.ID, ErrUserDisabled)
	}
	return sess, user, nil
}

// DeleteSession ends the session a token belongs to: logging out. An
// unknown token is not an error.
func (s *BoltStore) DeleteSession(token string) error {
	hash := sha256.Sum256([]byte(token))
	return s.deleteSession(hash[:])
}

func (s *BoltStore) deleteSession(hash []byte) error {
	err := s.update(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		v := sessions.Get(hash)
		if v == nil {
			return nil
		}
		var sess Session
		if err := json.Unmarshal(v, &sess); err == nil {
			if err := tx.Bucket(bucketUserSessions).Delete(userSessionKey(sess.UserID, hash)); err != nil {
				return err
			}
		}
		// A record that does not decode goes too: nobody can use it.
		return sessions.Delete(hash)
	})
	if err != nil {
		return fmt.Errorf("deleting session: %w", err)
	}
	return nil
}

// deleteSessions deletes, inside tx, each of a user's sessions for which
// doomed says so, and index entries whose session is gone.
func deleteSessions(tx *bolt.Tx, userID string, doomed func(*Session) bool) error {
	sessions, index := tx.Bucket(bucketSessions), tx.Bucket(bucketUserSessions)
	prefix := []byte(userID + "/")
	// Collect first: deleting under a bbolt cursor makes it skip keys.
	var drop [][]byte
	c := index.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		hash, err := hex.DecodeString(string(k[len(prefix):]))
		if err != nil {
			return fmt.Errorf("session index key %q: %w", k, err)
		}
		v := sessions.Get(hash)
		if v != nil {
			var sess Session
			if err := json.Unmarshal(v, &sess); err != nil {
				return fmt.Errorf("decoding session of user %s: %w", userID, err)
			}
			if !doomed(&sess) {
				continue
			}
			if err := sessions.Delete(hash); err != nil {
				return err
			}
		}
		drop = append(drop, bytes.Clone(k))
	}
	for _, k := range drop {
		if err := index.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
