package openai

import "slices"

// The two rewrites the gateway makes to bodies in flight, both by splicing
// byte spans: the request goes upstream with the upstream's model ID (and, if
// asked, with the usage chunk switched on); every response and chunk comes
// back with the public model ID. All other bytes pass unchanged.

// Texts spliced in to switch the usage chunk on.
const (
	usageMember        = `"stream_options":{"include_usage":true},`
	usageObject        = `{"include_usage":true}`
	includeUsageMember = `"include_usage":true`
)

// AppendUpstream appends to dst the request body to send upstream: body with
// the model value replaced by upstreamModel and, when forceIncludeUsage is set
// and the request streams, stream_options.include_usage set to true so the
// upstream reports usage in a final chunk. All other bytes are kept as they
// are. body must be the bytes r was scanned from; given any other body (of
// another length) it appends body unchanged, so the upstream sees the public
// model and refuses it rather than the gateway splicing at the wrong offsets.
func (r *Request) AppendUpstream(dst, body []byte, upstreamModel string, forceIncludeUsage bool) []byte {
	if len(body) != r.size || !r.model.ok() {
		return append(dst, body...)
	}
	dst = slices.Grow(dst, len(body)+len(upstreamModel)+len(usageMember)+2)

	// At most two edits: the model value, and one for stream_options.
	var at, end int // the stream_options edit replaces body[at:end] by text
	var text string
	if forceIncludeUsage && r.Stream && !r.IncludeUsage {
		switch {
		case !r.opts.ok(): // insert the member first, so the object's members follow it
			at, end, text = r.open+1, r.open+1, usageMember
		case r.optsNull:
			at, end, text = r.opts.start, r.opts.end, usageObject
		case r.usage.ok(): // include_usage: false
			at, end, text = r.usage.start, r.usage.end, "true"
		case r.optsVoid:
			at, end, text = r.opts.start+1, r.opts.start+1, includeUsageMember
		default:
			at, end, text = r.opts.start+1, r.opts.start+1, includeUsageMember+","
		}
	}
	if text == "" {
		dst = append(dst, body[:r.model.start]...)
		dst = appendJSONString(dst, upstreamModel)
		return append(dst, body[r.model.end:]...)
	}
	if at < r.model.start {
		dst = append(dst, body[:at]...)
		dst = append(dst, text...)
		dst = append(dst, body[end:r.model.start]...)
		dst = appendJSONString(dst, upstreamModel)
		return append(dst, body[r.model.end:]...)
	}
	dst = append(dst, body[:r.model.start]...)
	dst = appendJSONString(dst, upstreamModel)
	dst = append(dst, body[r.model.end:at]...)
	dst = append(dst, text...)
	return append(dst, body[end:]...)
}

// AppendWithModel appends obj, a JSON object such as a whole response or one
// stream chunk's data, with the value of its top-level "model" key replaced
// by model. All other bytes are kept as they are. Every top-level "model"
// member is replaced, should the upstream repeat it, so its model ID cannot
// leak. An obj that is not a valid JSON object, or has no top-level model,
// is appended unchanged. It allocates nothing when dst has room.
func AppendWithModel(dst, obj []byte, model string) []byte {
	c := ScanChunk(obj)
	return c.AppendWithModel(dst, model)
}

// appendWithModelWalk is AppendWithModel by a walk of its own, for an
// object with more "model" members than a Chunk keeps.
func appendWithModelWalk(dst, obj []byte, model string) []byte {
	base, last := len(dst), 0
	o := topObject(obj)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		if m.is("model") {
			dst = append(dst, obj[last:m.start]...)
			dst = appendJSONString(dst, model)
			last = m.end
		}
	}
	if o.failed() {
		return append(dst[:base], obj...)
	}
	return append(dst, obj[last:]...)
}
