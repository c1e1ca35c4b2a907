package openai

import "strings"

// Chunk is a response or stream chunk as the gateway reads it: one walk
// over its top-level object finds what metering, the usage-chunk filter and
// the model rewrite need, so a relayed event is walked once instead of once
// per question. The methods answer exactly as ParseUsage, IsUsageOnlyChunk,
// AppendContent and AppendWithModel do on the same bytes (those are
// written in terms of them).
type Chunk struct {
	obj []byte
	// models are the spans of the first top-level "model" values, nModels
	// how many there are in all; an upstream that repeats the key more
	// often than models holds is rewritten by a second walk.
	models  [2]span
	nModels int
	// choices and usage are the last top-level members of each name, as
	// encoding/json would take them.
	choices, usage span
	valid          bool // obj is one valid JSON object
	// errorKey: a top-level member is named "error" in any case, as
	// encoding/json would match it when decoding an error event, and its
	// value says there is one (not null, false or "").
	errorKey bool
}

// ScanChunk walks obj once. It allocates nothing.
func ScanChunk(obj []byte) Chunk {
	c := Chunk{obj: obj}
	o := topObject(obj)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		switch {
		case m.is("model"):
			if c.nModels < len(c.models) {
				c.models[c.nModels] = m.span
			}
			c.nModels++
		case m.is("choices"):
			c.choices = m.span
		case m.is("usage"):
			c.usage = m.span
		case (len(m.key) == len("error") || m.esc) && isErrorName(&m) && !NoError(obj[m.start:m.end]):
			c.errorKey = true
		}
	}
	c.valid = !o.failed()
	return c
}

// isErrorName reports whether m's key is "error" in any case: the names
// encoding/json matches to a field tagged "error" (none of its letters has
// a non-ASCII case fold).
func isErrorName(m *member) bool {
	var buf [maxName]byte
	return strings.EqualFold(string(asciiName(m.key, m.esc, &buf)), "error")
}

// NoError reports whether an error member's value says there is none:
// null, false or "", which some servers send in every chunk.
func NoError(v []byte) bool {
	switch string(v) {
	case "null", "false", `""`:
		return true
	}
	return false
}

// MayBeError reports whether the chunk may be an error event: it is valid
// and has a top-level member named "error" in some case whose value is not
// null, false or "". Only such a chunk needs decoding to find out.
func (c *Chunk) MayBeError() bool { return c.valid && c.errorKey }

// Valid reports whether the chunk is one valid JSON object: exactly when
// json.Valid holds and the value is an object.
func (c *Chunk) Valid() bool { return c.valid }

// Usage is ParseUsage of the chunk.
func (c *Chunk) Usage() (Usage, bool) {
	if !c.valid || !c.usage.ok() || c.obj[c.usage.start] != '{' {
		return Usage{}, false
	}
	return usageAt(c.obj, c.usage), true
}

// UsageOnly is IsUsageOnlyChunk of the chunk.
func (c *Chunk) UsageOnly() bool {
	if !c.valid || !c.choices.ok() || !c.usage.ok() || c.obj[c.choices.start] != '[' || c.obj[c.usage.start] != '{' {
		return false
	}
	a := openArray(c.obj, c.choices)
	_, some := a.next()
	return !some
}

// AppendContent is AppendContent of the chunk.
func (c *Chunk) AppendContent(dst []byte) []byte {
	if !c.valid || !c.choices.ok() || c.obj[c.choices.start] != '[' {
		return dst
	}
	return appendChoicesText(dst, c.obj, c.choices)
}

// AppendWithModel is AppendWithModel of the chunk.
func (c *Chunk) AppendWithModel(dst []byte, model string) []byte {
	switch {
	case !c.valid:
		return append(dst, c.obj...)
	case c.nModels > len(c.models):
		return appendWithModelWalk(dst, c.obj, model)
	}
	last := 0
	for _, v := range c.models[:c.nModels] {
		dst = append(dst, c.obj[last:v.start]...)
		dst = appendJSONString(dst, model)
		last = v.end
	}
	return append(dst, c.obj[last:]...)
}
