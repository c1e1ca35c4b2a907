package billing

import (
	"strconv"
	"time"
)

// appendEntryJSON appends e as json.Marshal encodes it, byte for byte,
// without reflection: a settlement encodes its ledger row once, on the
// path every request waits on (BenchmarkAppendRecord). It reports false,
// having appended nothing, for a row it leaves to json.Marshal: a string
// that needs escaping (anything but printable ASCII without '"', '\\', '<',
// '>' and '&', which json.Marshal escapes for HTML) or a time that is not
// UTC in years 0 to 9999. FuzzAppendEntryJSON holds it to json.Marshal.
func appendEntryJSON(dst []byte, e *Entry) ([]byte, bool) {
	if !plainJSON(string(e.Kind)) || !plainJSON(e.AccountID) || !plainJSON(e.Note) ||
		!plainJSON(e.RequestID) || !plainJSON(e.KeyID) || !plainJSON(e.Model) ||
		!plainJSON(e.Deployment) || !plainJSON(e.Basis) || !plainJSON(e.Outcome) ||
		e.Time.Location() != time.UTC || e.Time.Year() < 0 || e.Time.Year() > 9999 {
		return dst, false
	}
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","account_id":"`...)
	dst = append(dst, e.AccountID...)
	dst = append(dst, `","kind":"`...)
	dst = append(dst, e.Kind...)
	dst = append(dst, `","amount":"`...)
	dst = e.Amount.appendTo(dst)
	dst = append(dst, `","balance":"`...)
	dst = e.Balance.appendTo(dst)
	dst = append(dst, '"')
	dst = appendStringMember(dst, `,"note":"`, e.Note)
	dst = appendStringMember(dst, `,"request_id":"`, e.RequestID)
	dst = appendStringMember(dst, `,"key_id":"`, e.KeyID)
	dst = appendStringMember(dst, `,"model":"`, e.Model)
	dst = appendStringMember(dst, `,"deployment":"`, e.Deployment)
	dst = appendIntMember(dst, `,"prompt_tokens":`, e.PromptTokens)
	dst = appendIntMember(dst, `,"cached_tokens":`, e.CachedTokens)
	dst = appendIntMember(dst, `,"cache_write_tokens":`, e.CacheWriteTokens)
	dst = appendIntMember(dst, `,"completion_tokens":`, e.CompletionTokens)
	dst = appendStringMember(dst, `,"basis":"`, e.Basis)
	dst = appendStringMember(dst, `,"outcome":"`, e.Outcome)
	dst = appendIntMember(dst, `,"attempts":`, int64(e.Attempts))
	return append(dst, '}'), true
}

// entryJSONBound is at least the length of e's JSON from appendEntryJSON:
// its keys and punctuation (266 bytes), numbers at their longest (199) and
// its strings.
func entryJSONBound(e *Entry) int {
	return 480 + len(e.Kind) + len(e.AccountID) + len(e.Note) + len(e.RequestID) + len(e.KeyID) +
		len(e.Model) + len(e.Deployment) + len(e.Basis) + len(e.Outcome)
}

// appendStringMember appends an omitempty string member; key ends with the
// value's opening quote.
func appendStringMember(dst []byte, key, v string) []byte {
	if v == "" {
		return dst
	}
	dst = append(dst, key...)
	dst = append(dst, v...)
	return append(dst, '"')
}

// appendIntMember appends an omitempty integer member.
func appendIntMember(dst []byte, key string, v int64) []byte {
	if v == 0 {
		return dst
	}
	return strconv.AppendInt(append(dst, key...), v, 10)
}

// plainJSON reports whether json.Marshal writes s as itself between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
