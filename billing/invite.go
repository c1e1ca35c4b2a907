package billing

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrInviteInvalid is the one answer to an invite code that is unknown,
// used, revoked or expired, so a sign-up form does not tell which.
var ErrInviteInvalid = errors.New("invite code unknown, used, revoked or expired")

// An invite code reads "inv_" + 32 base62 characters (190 bits), drawn
// like a key's. Only its SHA-256 is stored.
const (
	InvitePrefix  = "inv_"
	inviteBodyLen = 32
)

// InviteState says whether an invite can still be used.
type InviteState string

// Invite states, as the admin API reports them.
const (
	InviteUnused  InviteState = "unused"
	InviteUsed    InviteState = "used"
	InviteRevoked InviteState = "revoked"
	InviteExpired InviteState = "expired"
)

// Invite lets one person sign up when sign-up is by invitation. The record
// never holds its code: the store indexes it by the code's SHA-256, and
// lists and revokes it by ID.
type Invite struct {
	ID   string `json:"id"`
	Note string `json:"note,omitempty"`
	// AccountID, when set, is the existing account the invite gives
	// access to: the user who signs up with it manages that account
	// instead of getting a new one.
	AccountID string     `json:"account_id,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// UsedBy and UsedAt are the user who signed up with the invite, and
	// when; an invite is used once.
	UsedBy    string     `json:"used_by,omitempty"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// State reports whether inv can be used at time now. A used invite stays
// used whatever else happens to it.
func (inv *Invite) State(now time.Time) InviteState {
	switch {
	case inv.UsedBy != "":
		return InviteUsed
	case inv.RevokedAt != nil:
		return InviteRevoked
	case inv.ExpiresAt != nil && !now.Before(*inv.ExpiresAt):
		return InviteExpired
	}
	return InviteUnused
}

// InviteSpec is what a caller chooses about a new invite.
type InviteSpec struct {
	// Note is for the operator: who the invite is for (up to 1000 bytes).
	Note string
	// ExpiresAt is when the code stops working; nil: never.
	ExpiresAt *time.Time
	// AccountID, when set, binds the invite to that existing account.
	AccountID string
}

// CreateInvite mints an invite code, good for one sign-up until
// spec.ExpiresAt. With spec.AccountID the invite is bound to that account,
// which must exist (ErrNotFound otherwise). The code is returned here and
// nowhere else: only its SHA-256 is stored.
func (s *BoltStore) CreateInvite(spec InviteSpec) (Invite, string, error) {
	if len(spec.Note) > 1000 {
		return Invite{}, "", fmt.Errorf("%w: note is longer than 1000 bytes", ErrInvalid)
	}
	now := s.now().UTC()
	inv := Invite{Note: spec.Note, AccountID: spec.AccountID, CreatedAt: now}
	if spec.ExpiresAt != nil {
		if !spec.ExpiresAt.After(now) {
			return Invite{}, "", fmt.Errorf("%w: expires_at is not in the future", ErrInvalid)
		}
		t := spec.ExpiresAt.UTC()
		inv.ExpiresAt = &t
	}
	id, err := newID(s.rand, "invite_")
	if err != nil {
		return Invite{}, "", err
	}
	inv.ID = id
	code := make([]byte, len(InvitePrefix)+inviteBodyLen)
	copy(code, InvitePrefix)
	if err := randomBase62(s.rand, code[len(InvitePrefix):]); err != nil {
		return Invite{}, "", fmt.Errorf("generating invite code: %w", err)
	}
	hash := sha256.Sum256(code)
	err = s.update(func(tx *bolt.Tx) error {
		if inv.AccountID != "" && tx.Bucket(bucketAccounts).Get([]byte(inv.AccountID)) == nil {
			return fmt.Errorf("account %s: %w", inv.AccountID, ErrNotFound)
		}
		invites, hashes := tx.Bucket(bucketInvites), tx.Bucket(bucketInviteHashes)
		if hashes.Get(hash[:]) != nil || invites.Get([]byte(id)) != nil {
			return fmt.Errorf("invite collided; try again")
		}
		if err := hashes.Put(hash[:], []byte(id)); err != nil {
			return err
		}
		return putJSON(invites, id, &inv)
	})
	if err != nil {
		return Invite{}, "", fmt.Errorf("creating invite: %w", err)
	}
	return inv, string(code), nil
}

// Invites lists every invite, oldest first, used, revoked and expired ones
// included.
func (s *BoltStore) Invites() ([]Invite, error) {
	var out []Invite
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInvites).ForEach(func(k, v []byte) error {
			var inv Invite
			if err := json.Unmarshal(v, &inv); err != nil {
				return fmt.Errorf("decoding invite %s: %w", k, err)
			}
			out = append(out, inv)
			return nil
		})
	})
	sortByCreated(out, func(inv Invite) (time.Time, string) { return inv.CreatedAt, inv.ID })
	return out, err
}

// RevokeInvite makes an unused invite unusable: a sign-up with its code
// gets ErrInviteInvalid. Revoking twice is not an error and keeps the first
// revocation time. A used invite cannot be revoked (ErrInvalid): its user
// exists, and SetUserState is what stops it.
func (s *BoltStore) RevokeInvite(id string) (Invite, error) {
	var inv Invite
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInvites)
		if err := getJSON(b, id, &inv, "invite"); err != nil {
			return err
		}
		switch {
		case inv.UsedBy != "":
			return fmt.Errorf("%w: invite %s was used by user %s; disable the user instead", ErrInvalid, id, inv.UsedBy)
		case inv.RevokedAt != nil:
			return nil
		}
		t := s.now().UTC()
		inv.RevokedAt = &t
		return putJSON(b, id, &inv)
	})
	return inv, err
}

// useInvite marks an invite code used by userID at now, inside tx, and
// returns it, or fails with ErrInviteInvalid.
func useInvite(tx *bolt.Tx, code, userID string, now time.Time) (Invite, error) {
	inv, err := findInvite(tx, code, now)
	if err != nil {
		return Invite{}, err
	}
	inv.UsedBy, inv.UsedAt = userID, &now
	return inv, putJSON(tx.Bucket(bucketInvites), inv.ID, &inv)
}

// findInvite returns the unused invite a code belongs to, or
// ErrInviteInvalid.
func findInvite(tx *bolt.Tx, code string, now time.Time) (Invite, error) {
	hash := sha256.Sum256([]byte(code))
	id := tx.Bucket(bucketInviteHashes).Get(hash[:])
	if id == nil {
		return Invite{}, ErrInviteInvalid
	}
	var inv Invite
	if err := getJSON(tx.Bucket(bucketInvites), string(id), &inv, "invite"); err != nil {
		return Invite{}, err
	}
	if inv.State(now) != InviteUnused {
		return Invite{}, ErrInviteInvalid
	}
	return inv, nil
}
