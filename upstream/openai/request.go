package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// Request is what the gateway needs to know about a chat completions request,
// read from the body without decoding it. The body itself is not kept: pass
// the same bytes to AppendUpstream.
type Request struct {
	// Model is the public model ID the client asked for, decoded.
	Model string
	// Stream is true when the client asked for server-sent events.
	Stream bool
	// MaxTokens is max_completion_tokens, else max_tokens, else 0 (no limit
	// given: the model's own output cap applies).
	MaxTokens int64
	// N is the number of choices asked for (1 to 128, default 1). Every
	// choice is generated and billed, so a worst-case hold multiplies by it.
	N int64
	// IncludeUsage is true when the client itself asked for the usage chunk
	// (stream_options.include_usage: true). When it did not but the upstream
	// was asked anyway, drop that chunk from the client's stream.
	IncludeUsage bool
	// Messages is the number of messages, at least 1.
	Messages int
	// Images is the number of image parts: content parts of type
	// image_url, in any message. A balance hold bounds the prompt by the
	// body's bytes, but an image given by URL is a few dozen bytes that
	// cost hundreds to thousands of prompt tokens, and even an inline one
	// can cost more tokens than its bytes (a 1x1 PNG is a whole tile), so
	// the hold adds a bound per image, inline or not.
	//
	// The count errs high, never low, as what it bounds is money: keys
	// are matched under ASCII case folding and in every repeat, because
	// some upstreams decode with Go's encoding/json (case-insensitive,
	// last repeat wins) and others with case-sensitive decoders that keep
	// the first.
	Images int
	// Files is the number of file parts: content parts of type file, a
	// document given by file_id or inline as file_data. Nothing in the
	// request bounds what one costs: a file_id is a few bytes naming a
	// document the provider holds, and a PDF is billed as the text and an
	// image of every page, which a small inline file can hold thousands
	// of. The hold bounds such a prompt by the model's context length.
	// Counted as Images is: erring high.
	Files int

	size     int  // len(body) scanned; AppendUpstream refuses any other body
	open     int  // offset of the top-level '{'
	model    span // the model value, quotes included
	opts     span // the stream_options value, when present (it may be null)
	optsNull bool
	optsVoid bool // stream_options is an object with no members
	usage    span // stream_options.include_usage, when present
}

// Roles a message may have.
const (
	roleOther = iota
	roleSystem
	roleDeveloper
	roleUser
	roleAssistant
	roleTool
	roleFunction
)

// maxN is OpenAI's limit for n (CreateChatCompletionRequest).
const maxN = 128

// checkedKeys are the members ScanRequest reads.
var checkedKeys = [...]string{"model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens"}

// foldsToChecked returns the checked key that name equals under Unicode
// case folding (as encoding/json matches keys), or "".
func foldsToChecked(name []byte) string {
	for _, k := range checkedKeys {
		if len(name) >= len(k) && bytes.EqualFold(name, []byte(k)) {
			return k
		}
	}
	return ""
}

// ScanRequest validates a chat completions request body and reads what the
// gateway needs from it, without decoding it. Any error is a *RequestError.
//
// It checks the fields the gateway acts on, and only those: model, messages
// (each an object with a known role and a content of the right type), stream,
// stream_options, temperature, top_p, n, max_tokens and
// max_completion_tokens. Every other field passes through untouched for the
// upstream to judge. JSON allows a key to repeat; for the keys checked here a
// repeat is refused (duplicate_parameter), because we and the upstream could
// read different values from it: which one would be billed? Integer
// parameters must be integer literals: 1.0 and 1e3 are refused though JSON
// calls them numbers, as no client sends them on purpose.
func ScanRequest(body []byte) (Request, error) {
	var r Request
	o := topObject(body)
	if o.failed() {
		if validValue(body) {
			return r, &RequestError{Message: "The request body must be a JSON object.", Code: codeType}
		}
		return r, malformed()
	}
	r.open = o.i - 1

	var f struct {
		messages, stream, temperature, topP, n, maxTokens, maxCompletion span
	}
	var dup string
	var buf [maxName]byte
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		var p *span
		var param string
		name := m.name(&buf)
		switch string(name) {
		case "model":
			p, param = &r.model, "model"
		case "messages":
			p, param = &f.messages, "messages"
		case "stream":
			p, param = &f.stream, "stream"
		case "stream_options":
			p, param = &r.opts, "stream_options"
		case "temperature":
			p, param = &f.temperature, "temperature"
		case "top_p":
			p, param = &f.topP, "top_p"
		case "n":
			p, param = &f.n, "n"
		case "max_tokens":
			p, param = &f.maxTokens, "max_tokens"
		case "max_completion_tokens":
			p, param = &f.maxCompletion, "max_completion_tokens"
		default:
			// Go's encoding/json, which several OpenAI-compatible servers
			// decode with, matches keys case-insensitively and keeps the
			// last: "Model" after "model" would pick another model than
			// the one checked and billed. Such a key counts as a repeat.
			if canon := foldsToChecked(name); canon != "" && dup == "" {
				dup = canon
			}
			continue
		}
		if p.ok() && dup == "" {
			dup = param
		}
		*p = m.span
	}
	if o.failed() {
		return Request{}, malformed()
	}
	if dup != "" {
		return Request{}, duplicate(dup)
	}
	r.size = len(body)

	var err *RequestError
	if r.Model, err = scanModel(body, r.model); err != nil {
		return Request{}, err
	}
	var parts partCounts
	if r.Messages, parts, err = scanMessages(body, f.messages); err != nil {
		return Request{}, err
	}
	r.Images, r.Files = parts.images, parts.files
	if r.Stream, err = optionalBool(body, f.stream, "stream"); err != nil {
		return Request{}, err
	}
	if err = r.scanStreamOptions(body); err != nil {
		return Request{}, err
	}
	if err = optionalNumber(body, f.temperature, "temperature", 2); err != nil {
		return Request{}, err
	}
	if err = optionalNumber(body, f.topP, "top_p", 1); err != nil {
		return Request{}, err
	}
	if r.N, err = optionalCount(body, f.n, "n", maxN); err != nil {
		return Request{}, err
	}
	if r.N == 0 {
		r.N = 1
	}
	maxTokens, err := optionalCount(body, f.maxTokens, "max_tokens", 0)
	if err != nil {
		return Request{}, err
	}
	if r.MaxTokens, err = optionalCount(body, f.maxCompletion, "max_completion_tokens", 0); err != nil {
		return Request{}, err
	}
	if r.MaxTokens == 0 {
		r.MaxTokens = maxTokens
	}
	return r, nil
}

func scanModel(b []byte, v span) (string, *RequestError) {
	if !v.ok() {
		return "", missing("model")
	}
	if b[v.start] != '"' {
		return "", wrongType(b, v, "model", "a string")
	}
	if v.end-v.start == 2 {
		return "", &RequestError{Param: "model", Code: codeValue,
			Message: "Invalid 'model': expected a non-empty string, but got an empty string instead."}
	}
	raw := b[v.start+1 : v.end-1]
	if _, esc := scanString(b, v.start); !esc && utf8.Valid(raw) {
		return string(raw), nil
	}
	// Escapes or invalid UTF-8: decode the way encoding/json does, which is
	// how the upstream and any log reader will see it.
	var s string
	if err := json.Unmarshal(b[v.start:v.end], &s); err != nil {
		return "", malformed() // unreachable: the walk validated the string
	}
	return s, nil
}

// scanMessages checks the messages and returns how many there are and how
// many image and file parts they hold.
func scanMessages(b []byte, v span) (n int, parts partCounts, err *RequestError) {
	if !v.ok() {
		return 0, parts, missing("messages")
	}
	if b[v.start] != '[' {
		return 0, parts, wrongType(b, v, "messages", "an array")
	}
	a := openArray(b, v)
	for {
		e, ok := a.next()
		if !ok {
			break
		}
		p, err := scanMessage(b, e, n)
		if err != nil {
			return 0, partCounts{}, err
		}
		parts.images += p.images
		parts.files += p.files
		n++
	}
	if n == 0 {
		return 0, parts, &RequestError{Param: "messages", Code: codeValue,
			Message: "Invalid 'messages': expected an array with at least 1 message, but got an empty array instead."}
	}
	return n, parts, nil
}

// partCounts is how many image and file parts a message's content holds
// (Request.Images, Request.Files).
type partCounts struct{ images, files int }

// scanMessage checks messages[i] and counts the image and file parts of
// its content.
func scanMessage(b []byte, v span, i int) (partCounts, *RequestError) {
	if b[v.start] != '{' {
		return partCounts{}, wrongType(b, v, messageParam(i, ""), "an object")
	}
	var role, content span
	var buf [maxName]byte
	o := openObject(b, v)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		name := m.name(&buf)
		switch string(name) {
		case "role":
			if role.ok() {
				return partCounts{}, duplicate(messageParam(i, "role"))
			}
			role = m.span
		case "content":
			if content.ok() {
				return partCounts{}, duplicate(messageParam(i, "content"))
			}
			content = m.span
		default:
			// As at the top level: an upstream that decodes with Go's
			// encoding/json would read "Content" as the content, whose
			// images and files were not counted. Such a key counts as a
			// repeat.
			for _, k := range [...]string{"role", "content"} {
				if foldEqual(name, k) {
					return partCounts{}, duplicate(messageParam(i, k))
				}
			}
		}
	}
	if !role.ok() {
		return partCounts{}, missing(messageParam(i, "role"))
	}
	if b[role.start] != '"' {
		return partCounts{}, wrongType(b, role, messageParam(i, "role"), "a string")
	}
	kind := roleOf(b, role)
	if kind == roleOther {
		return partCounts{}, &RequestError{Param: messageParam(i, "role"), Code: codeValue,
			Message: "Invalid value for '" + messageParam(i, "role") + "': supported values are 'system', " +
				"'developer', 'user', 'assistant', 'tool' and 'function'."}
	}
	// Assistant messages may leave content out or null when they carry
	// tool_calls; function messages have nullable content in the spec.
	nullable := kind == roleAssistant || kind == roleFunction
	if !content.ok() {
		if kind == roleAssistant {
			return partCounts{}, nil
		}
		return partCounts{}, missing(messageParam(i, "content"))
	}
	switch b[content.start] {
	case '"':
		return partCounts{}, nil
	case '[':
		return parts(b, content), nil
	case 'n':
		if nullable {
			return partCounts{}, nil
		}
	}
	return partCounts{}, wrongType(b, content, messageParam(i, "content"), "a string or an array of content parts")
}

// parts counts the image and file parts in the array at v (see
// Request.Images and Request.Files). Elements that are not objects are not
// parts this gateway reads: the upstream judges them.
func parts(b []byte, v span) partCounts {
	var n partCounts
	a := openArray(b, v)
	for {
		p, ok := a.next()
		if !ok {
			return n
		}
		if b[p.start] == '{' {
			image, file := partTypes(b, p)
			if image {
				n.images++
			}
			if file {
				n.files++
			}
		}
	}
}

// partTypes reports whether the content part at v, an object, is an image
// part (some member whose key folds to "type" is "image_url") and whether
// it is a file part (some such member is "file"). A part whose type is
// repeated with both is counted as both.
func partTypes(b []byte, v span) (image, file bool) {
	var buf [maxName]byte
	o := openObject(b, v)
	for {
		m, ok := o.next()
		if !ok {
			return image, file
		}
		if foldEqual(m.name(&buf), "type") {
			image = image || isStringValue(b, m.span, "image_url")
			file = file || isStringValue(b, m.span, "file")
		}
	}
}

// foldEqual reports whether name equals the lower-case ASCII word under
// ASCII case folding. (Unicode folding adds nothing for the words used
// here: none holds a k or an s.)
func foldEqual(name []byte, word string) bool {
	if len(name) != len(word) {
		return false
	}
	for i := range len(name) {
		if c := name[i]; c != word[i] && c|0x20 != word[i] {
			return false
		}
	}
	return true
}

// isStringValue reports whether the value at v is a string that decodes to
// the ASCII word.
func isStringValue(b []byte, v span, word string) bool {
	if b[v.start] != '"' {
		return false
	}
	raw := b[v.start+1 : v.end-1]
	return equalString(raw, bytes.IndexByte(raw, '\\') >= 0, word)
}

func roleOf(b []byte, v span) int {
	_, esc := scanString(b, v.start)
	var buf [maxName]byte
	switch string(asciiName(b[v.start+1:v.end-1], esc, &buf)) {
	case "system":
		return roleSystem
	case "developer":
		return roleDeveloper
	case "user":
		return roleUser
	case "assistant":
		return roleAssistant
	case "tool":
		return roleTool
	case "function":
		return roleFunction
	}
	return roleOther
}

func messageParam(i int, field string) string {
	p := "messages[" + strconv.Itoa(i) + "]"
	if field != "" {
		p += "." + field
	}
	return p
}

// scanStreamOptions checks stream_options (an object or null, and non-null
// only when streaming, as OpenAI insists) and its include_usage.
func (r *Request) scanStreamOptions(b []byte) *RequestError {
	v := r.opts
	if !v.ok() {
		return nil
	}
	switch b[v.start] {
	case 'n':
		r.optsNull = true
		return nil
	case '{':
	default:
		return wrongType(b, v, "stream_options", "an object")
	}
	if !r.Stream {
		return &RequestError{Param: "stream_options", Code: codeValue,
			Message: "The 'stream_options' parameter is only allowed when 'stream' is enabled."}
	}
	r.optsVoid = true
	var buf [maxName]byte
	o := openObject(b, v)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		r.optsVoid = false
		if string(m.name(&buf)) != "include_usage" {
			continue
		}
		if r.usage.ok() {
			return duplicate("stream_options.include_usage")
		}
		r.usage = m.span
	}
	if !r.usage.ok() {
		return nil
	}
	switch b[r.usage.start] {
	case 't':
		r.IncludeUsage = true
	case 'f':
	default:
		return wrongType(b, r.usage, "stream_options.include_usage", "a boolean")
	}
	return nil
}

func optionalBool(b []byte, v span, param string) (bool, *RequestError) {
	if !v.ok() {
		return false, nil
	}
	switch b[v.start] {
	case 't':
		return true, nil
	case 'f', 'n':
		return false, nil
	}
	return false, wrongType(b, v, param, "a boolean")
}

// optionalNumber checks a nullable number in [0, max].
func optionalNumber(b []byte, v span, param string, max float64) *RequestError {
	if !v.ok() || b[v.start] == 'n' {
		return nil
	}
	if !isNumber(b[v.start]) {
		return wrongType(b, v, param, "a number")
	}
	// A float parse error can only be ErrRange here, with ±Inf, or 0 for
	// underflow: both fall out of the range checks below.
	f, _ := strconv.ParseFloat(string(b[v.start:v.end]), 64)
	if f < 0 || f > max {
		return &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected a number from 0 to " + strconv.FormatFloat(max, 'g', -1, 64) + "."}
	}
	return nil
}

// optionalCount reads a nullable positive integer no larger than max (0: no
// bound but int64's). Only integer literals count: no fraction, no exponent.
func optionalCount(b []byte, v span, param string, max int64) (int64, *RequestError) {
	if !v.ok() || b[v.start] == 'n' {
		return 0, nil
	}
	if !isNumber(b[v.start]) {
		return 0, wrongType(b, v, param, "an integer")
	}
	n, err := parseCount(b[v.start:v.end])
	switch {
	case errors.Is(err, errNotInteger):
		return 0, wrongType(b, v, param, "an integer")
	case err == nil && n >= 1 && (max == 0 || n <= max):
		return n, nil
	case max == 0:
		return 0, &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected an integer from 1 to 9223372036854775807."}
	default:
		return 0, &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected an integer from 1 to " + strconv.FormatInt(max, 10) + "."}
	}
}

var (
	errNotInteger = errors.New("not an integer literal")
	errRange      = errors.New("integer out of range")
)

// parseCount parses a valid JSON number that must be a non-negative integer
// literal fitting in int64. A negative integer, -0 included, is errRange.
func parseCount(num []byte) (int64, error) {
	digits := num
	if num[0] == '-' {
		digits = num[1:]
	}
	for _, c := range digits {
		if !isDigit(c) {
			return 0, errNotInteger
		}
	}
	if num[0] == '-' {
		return 0, errRange
	}
	var n int64
	for _, c := range digits {
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, errRange
		}
		n = n*10 + d
	}
	return n, nil
}

func isNumber(c byte) bool { return c == '-' || isDigit(c) }
