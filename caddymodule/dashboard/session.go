package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

// Cookie names. The session cookie holds the session token; the CSRF
// cookie holds the double-submit token of the forms shown before log-in.
const (
	sessionCookie = "arcane_session"
	csrfCookie    = "arcane_csrf"
	csrfField     = "csrf"
)

// maxForm bounds a form's body.
const maxForm = 64 << 10

// visit is a signed-in request: the session and its user.
type visit struct {
	token   string
	session billing.Session
	user    billing.User
}

// signedIn wraps a page that needs a session. Without a valid one the
// browser goes to the log-in page (told when its session expired), and a
// form is not acted on. A form with a session must carry the session's
// CSRF token.
func (h *Handler) signedIn(page func(http.ResponseWriter, *http.Request, *visit)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h.visit(r)
		if err != nil {
			to := h.cfg.Base + "/login"
			if errors.Is(err, billing.ErrSessionExpired) {
				to += "?expired=1"
				h.clearCookie(w, r, sessionCookie)
			} else if !errors.Is(err, errNoSession) {
				h.clearCookie(w, r, sessionCookie)
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if !h.readForm(w, r) {
				return
			}
			if !sameToken(r.PostFormValue(csrfField), v.session.CSRF) {
				h.forbidden(w, r, "This form has expired. Reload the page and try again.")
				return
			}
		}
		page(w, r, v)
	}
}

var errNoSession = errors.New("no session cookie")

// visit looks up the request's session.
func (h *Handler) visit(r *http.Request) (*visit, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, errNoSession
	}
	sess, user, err := h.store.SessionByToken(c.Value)
	if err != nil {
		if !errors.Is(err, billing.ErrNotFound) && !errors.Is(err, billing.ErrSessionExpired) && !errors.Is(err, billing.ErrUserDisabled) {
			h.logger.Error("reading a dashboard session", errField(err))
		}
		return nil, err
	}
	return &visit{token: c.Value, session: sess, user: user}, nil
}

// startSession logs user in: a new session (ending the one the browser
// had, if any) and its cookie.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, user billing.User) error {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if err := h.store.DeleteSession(c.Value); err != nil {
			h.logger.Warn("ending the previous dashboard session", errField(err))
		}
	}
	sess, token, err := h.store.CreateSession(user.ID, h.cfg.SessionLifetime)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: token, Path: h.cfg.Base + "/", Expires: sess.ExpiresAt,
		MaxAge: int(sess.ExpiresAt.Sub(h.now()).Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func (h *Handler) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: h.cfg.Base + "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
}

// readForm reads a POSTed form of at most maxForm bytes; when it cannot,
// it answers (413 or 400) and returns false.
func (h *Handler) readForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	err := r.ParseForm()
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		h.render(w, r, http.StatusRequestEntityTooLarge, "error", page{Data: "This form is too large."})
	} else {
		h.render(w, r, http.StatusBadRequest, "error", page{Data: "This form could not be read. Reload the page and try again."})
	}
	return false
}

// formToken returns the double-submit token for a form shown before
// log-in, setting its cookie when the browser has none.
func (h *Handler) formToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: h.cfg.Base + "/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return tok
}

// formTokenOK checks a form sent before log-in: its token must match the
// cookie's.
func formTokenOK(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	return err == nil && sameToken(r.PostFormValue(csrfField), c.Value)
}

// sameToken compares two tokens in constant time; empty never matches.
func sameToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// attempt spends one log-in or sign-up attempt from the client address's
// budget and, when email is set, from that email's. It returns how long
// to wait when either budget is spent.
func (h *Handler) attempt(r *http.Request, email string) (wait time.Duration, ok bool) {
	addr := h.limiter.Allow("dashboard/addr/"+addressKey(h.clientAddr(r)), h.cfg.AddressLimit, 1)
	if !addr.Allowed {
		return addr.RetryAfter, false
	}
	if email == "" {
		return 0, true
	}
	e := h.limiter.Allow("dashboard/email/"+email, h.cfg.LoginLimit, 1)
	if !e.Allowed {
		return e.RetryAfter, false
	}
	return 0, true
}

// tooMany answers a spent attempt budget.
func (h *Handler) tooMany(w http.ResponseWriter, wait time.Duration) string {
	secs := ratelimit.RetryAfterSeconds(wait)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	mins := (secs + 59) / 60
	unit := "minutes"
	if mins == 1 {
		unit = "minute"
	}
	return "Too many attempts. Try again in " + strconv.FormatInt(mins, 10) + " " + unit + "."
}

// addressKey is what an address's budget is kept under: an IPv4 address
// itself, an IPv6 address's /64 (one subscriber or host usually holds a
// whole /64, so counting its addresses one by one would count nothing).
// Anything that is not an IP address is kept as it is, cut to 64 bytes.
func addressKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		if ap, err2 := netip.ParseAddrPort(addr); err2 == nil {
			ip, err = ap.Addr(), nil
		}
	}
	if err != nil {
		return addr[:min(len(addr), 64)]
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}
