package dashboard

import (
	"errors"
	"net/http"
	"strings"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// The log-in, sign-up and log-out forms.

type authForm struct {
	Email  string
	Invite string
	// Notice is a neutral message above the form (expired session,
	// logged out); Error a refusal.
	Notice, Error string
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := h.visit(r); err == nil {
		http.Redirect(w, r, h.cfg.Base+"/", http.StatusSeeOther)
		return
	}
	f := authForm{}
	switch {
	case r.URL.Query().Has("expired"):
		f.Notice = "Your session expired. Log in again."
	case r.URL.Query().Has("out"):
		f.Notice = "You are logged out."
	}
	h.render(w, r, http.StatusOK, "login", page{CSRF: h.formToken(w, r), Data: f})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if !h.readForm(w, r) {
		return
	}
	if !formTokenOK(r) {
		h.forbidden(w, r, "This form has expired. Reload the page and try again.")
		return
	}
	f := authForm{Email: strings.TrimSpace(r.PostFormValue("email"))}
	answer := func(status int, msg string) {
		f.Error = msg
		h.render(w, r, status, "login", page{CSRF: h.formToken(w, r), Data: f})
	}
	// Unknown emails spend a budget too, so the limits say nothing about
	// which emails exist. What is not an email at all (no account can
	// have it, and Login refuses it without a hash) spends only the
	// address's budget: it gets no budget of its own to fill memory with.
	email, err := billing.NormalizeEmail(f.Email)
	if err != nil {
		email = ""
	}
	if wait, ok := h.attempt(r, email); !ok {
		answer(http.StatusTooManyRequests, h.tooMany(w, wait))
		return
	}
	user, err := h.store.Login(f.Email, r.PostFormValue("password"))
	switch {
	case errors.Is(err, billing.ErrBadCredentials), errors.Is(err, billing.ErrInvalid):
		answer(http.StatusUnauthorized, "Wrong email or password.")
		return
	case errors.Is(err, billing.ErrUserDisabled):
		answer(http.StatusForbidden, "This account is disabled. "+h.cfg.Billing)
		return
	case errors.Is(err, billing.ErrBusy):
		w.Header().Set("Retry-After", "1")
		answer(http.StatusServiceUnavailable, "Too many log-ins at once. Try again in a moment.")
		return
	case err != nil:
		h.serverError(w, r, "logging in", err)
		return
	}
	h.welcome(w, r, user, "dashboard log-in")
}

// welcome starts user's session after a log-in or sign-up (event, for the
// log) and sends the browser to the overview.
func (h *Handler) welcome(w http.ResponseWriter, r *http.Request, user billing.User, event string) {
	if err := h.startSession(w, r, user); err != nil {
		h.serverError(w, r, "starting a session", err)
		return
	}
	h.logger.Info(event, userField(user))
	http.Redirect(w, r, h.cfg.Base+"/", http.StatusSeeOther)
}

func (h *Handler) signupPage(w http.ResponseWriter, r *http.Request) {
	if _, err := h.visit(r); err == nil {
		http.Redirect(w, r, h.cfg.Base+"/", http.StatusSeeOther)
		return
	}
	f := authForm{Invite: r.URL.Query().Get("invite")}
	status := http.StatusOK
	if h.cfg.Signup == SignupOff {
		status = http.StatusForbidden
	}
	h.render(w, r, status, "signup", page{CSRF: h.formToken(w, r), Data: f})
}

func (h *Handler) signup(w http.ResponseWriter, r *http.Request) {
	if !h.readForm(w, r) {
		return
	}
	if !formTokenOK(r) {
		h.forbidden(w, r, "This form has expired. Reload the page and try again.")
		return
	}
	f := authForm{Email: strings.TrimSpace(r.PostFormValue("email")), Invite: strings.TrimSpace(r.PostFormValue("invite"))}
	answer := func(status int, msg string) {
		f.Error = msg
		h.render(w, r, status, "signup", page{CSRF: h.formToken(w, r), Data: f})
	}
	if h.cfg.Signup == SignupOff {
		answer(http.StatusForbidden, "Sign-up is closed.")
		return
	}
	// Sign-up must say when an email is taken (there is no email channel
	// to say it privately), so it spends the email's budget as log-in
	// does: probing one address is as slow as guessing its password.
	email, err := billing.NormalizeEmail(f.Email)
	if err != nil {
		email = ""
	}
	if wait, ok := h.attempt(r, email); !ok {
		answer(http.StatusTooManyRequests, h.tooMany(w, wait))
		return
	}
	// An invite code is needed under SignupInvite; under SignupOpen one
	// is optional (an invite bound to an account joins that account).
	if h.cfg.Signup == SignupInvite && f.Invite == "" {
		answer(http.StatusForbidden, "Sign-up needs an invite code.")
		return
	}
	password := r.PostFormValue("password")
	if password != r.PostFormValue("password2") {
		answer(http.StatusBadRequest, "The two passwords differ.")
		return
	}
	// The gateway's sign-ups are limited as a whole too: with a starting
	// balance, each one is credit, and addresses are cheap.
	if d := h.limiter.Allow("dashboard/signups", h.cfg.SignupLimit, 1); !d.Allowed {
		answer(http.StatusTooManyRequests, h.tooMany(w, d.RetryAfter))
		return
	}
	user, _, err := h.store.CreateUser(f.Email, password, h.cfg.StartingBalance, f.Invite)
	switch {
	case errors.Is(err, billing.ErrBusy):
		w.Header().Set("Retry-After", "1")
		answer(http.StatusServiceUnavailable, "Too many sign-ups at once. Try again in a moment.")
		return
	case errors.Is(err, billing.ErrInviteInvalid):
		answer(http.StatusForbidden, "This invite code is unknown, used, revoked or expired.")
		return
	case errors.Is(err, billing.ErrEmailTaken):
		answer(http.StatusConflict, "An account with this email exists already. Log in instead.")
		return
	case errors.Is(err, billing.ErrInvalid):
		answer(http.StatusBadRequest, invalidMessage(err))
		return
	case err != nil:
		h.serverError(w, r, "signing up", err)
		return
	}
	h.welcome(w, r, user, "dashboard sign-up")
}

// logout ends the browser's session. Without a valid session there is
// nothing to end and nothing to protect: it clears the cookie either way.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if !h.readForm(w, r) {
		return
	}
	v, err := h.visit(r)
	if err == nil {
		if !sameToken(r.PostFormValue(csrfField), v.session.CSRF) {
			h.forbidden(w, r, "This form has expired. Reload the page and try again.")
			return
		}
		if err := h.store.DeleteSession(v.token); err != nil {
			h.serverError(w, r, "ending a session", err)
			return
		}
	}
	h.clearCookie(w, r, sessionCookie)
	http.Redirect(w, r, h.cfg.Base+"/login?out=1", http.StatusSeeOther)
}

// invalidMessage is the part of a billing ErrInvalid error a person
// should read: "invalid: password is shorter..." -> "Password is shorter...".
func invalidMessage(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, billing.ErrInvalid.Error()+": "); i >= 0 {
		msg = msg[i+len(billing.ErrInvalid.Error())+2:]
	}
	if msg == "" {
		return "Check the form and try again."
	}
	msg = strings.ToUpper(msg[:1]) + msg[1:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}
