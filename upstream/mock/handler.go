package mock

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Handler is the mock upstream: an http.Handler answering OpenAI's
// POST {base}/chat/completions, Anthropic's POST {base}/messages and
// GET {base}/models, where {base} is anything (usually /v1 or empty).
// Other paths get a 404 and other methods a 405. Errors come in the
// envelope of the API asked: Anthropic's for /messages and for any request
// carrying an anthropic-version header, OpenAI's otherwise. It is safe for
// concurrent use.
type Handler struct {
	cfg             Config
	interval        time.Duration // between tokens; 0 when unpaced
	models          []byte        // the GET /models body
	anthropicModels []byte        // the same, as Anthropic lists models

	// requests counts accepted chat completion and messages requests: it
	// numbers their ids and schedules ErrorRate's failures.
	requests atomic.Uint64

	// now gives a reply's created time; sleep waits d or until ctx is
	// done. Tests replace both so no test waits for real time.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// ModelID is the one model GET /models lists. Chat completions and
// messages accept any model and echo it back.
const ModelID = "mock"

// modelsCreated is the fixed created time of ModelID.
const modelsCreated = 1700000000

// NewHandler returns a Handler answering as cfg says, with out-of-range
// values clamped to their nearest sensible value.
func NewHandler(cfg Config) *Handler {
	if cfg.ReplyTokens <= 0 {
		cfg.ReplyTokens = DefaultReplyTokens
	}
	if cfg.TimeToFirstToken < 0 {
		cfg.TimeToFirstToken = 0
	}
	if !(cfg.ErrorRate > 0) { // also NaN
		cfg.ErrorRate = 0
	}
	cfg.ErrorRate = min(cfg.ErrorRate, 1)
	h := &Handler{cfg: cfg, now: time.Now, sleep: sleepTimer}
	if cfg.TokensPerSecond > 0 && !math.IsInf(cfg.TokensPerSecond, 1) {
		h.interval = time.Duration(float64(time.Second) / cfg.TokensPerSecond)
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	h.models, _ = json.Marshal(struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", []model{{ModelID, "model", modelsCreated, "arcane"}}})
	type anthropicModel struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	}
	h.anthropicModels, _ = json.Marshal(struct {
		Data    []anthropicModel `json:"data"`
		HasMore bool             `json:"has_more"`
		FirstID string           `json:"first_id"`
		LastID  string           `json:"last_id"`
	}{[]anthropicModel{{"model", ModelID, "Mock", time.Unix(modelsCreated, 0).UTC().Format(time.RFC3339)}}, false, ModelID, ModelID})
	return h
}

// ServeHTTP routes by path suffix, so the mock works under any base path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		h.serveChat(w, r)
	case strings.HasSuffix(path, "/messages"):
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeMessagesError(w, errMessagesMethod)
			return
		}
		h.serveMessages(w, r)
	case strings.HasSuffix(path, "/models"):
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, http.MethodGet)
			return
		}
		body := h.models
		if speaksAnthropic(r) {
			body = h.anthropicModels
		}
		hdr := w.Header()
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	case speaksAnthropic(r):
		writeMessagesError(w, errMessagesNotFound)
	default:
		// OpenAI's own wording for an unknown URL.
		writeError(w, &apiError{status: http.StatusNotFound, typ: "invalid_request_error",
			message: "Invalid URL (" + r.Method + " " + path + ")"})
	}
}

// speaksAnthropic reports whether r comes from an Anthropic client: every
// one sends anthropic-version, no OpenAI client does.
func speaksAnthropic(r *http.Request) bool {
	return r.Header.Get("Anthropic-Version") != ""
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	if speaksAnthropic(r) {
		writeMessagesError(w, errMessagesMethod)
		return
	}
	writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error",
		message: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
}

func (h *Handler) serveChat(w http.ResponseWriter, r *http.Request) {
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	body, apiErr := readBody(w, r, (*bp)[:0])
	*bp = body
	var req chatRequest
	if apiErr == nil {
		apiErr = req.decode(body)
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	n := h.requests.Add(1)
	if h.fails(n) {
		writeError(w, errMockFailure)
		return
	}
	rp := reply{id: n, created: h.now().Unix(), model: req.Model, prompt: req.promptTokens()}
	rp.tokens, rp.finish = req.replyLength(h.cfg.ReplyTokens)
	if req.Stream {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		*bp = h.writeStream(w, r, &rp, includeUsage, body)
	} else {
		*bp = h.writeCompletion(w, r, &rp, body)
	}
}

// fails reports whether request n (from 1) is one of ErrorRate's
// failures: those where n*rate passes an integer.
func (h *Handler) fails(n uint64) bool {
	rate := h.cfg.ErrorRate
	return rate > 0 && math.Floor(float64(n)*rate) > math.Floor(float64(n-1)*rate)
}

// timers are reused across sleeps: since Go 1.23, Stop and Reset leave no
// stale tick in the channel, so a pooled timer is as good as a new one.
var timers sync.Pool

// sleepTimer waits d, or until ctx is done, whichever comes first.
func sleepTimer(ctx context.Context, d time.Duration) error {
	t, _ := timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	defer timers.Put(t)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
