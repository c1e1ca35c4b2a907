package openai

import "bytes"

// Pricing: the gateway tells the client what a completion cost it, in the
// usage object the upstream reported, the way OpenRouter does. Some upstreams
// (OpenRouter among them) report their own cost there: that is the
// operator's price, not the client's, so it is taken out first.

// AppendUsageCost appends obj, a JSON object (a chat completion or a stream
// chunk), to dst with "cost":<cost> set as the last member of its top-level
// "usage" object. cost is a JSON number literal, such as 0.000123, and is
// inserted as it is, unchecked. Any "cost" and "cost_details" members the
// upstream put in usage are removed, so the client sees only the gateway's
// price. All other bytes are kept as they are: whitespace, member order and
// every other member, nested or not. Every top-level usage object is
// rewritten, should the upstream repeat the key, so the last one, which
// encoding/json keeps, has the gateway's cost and no earlier one leaks the
// upstream's. An obj that is not a valid JSON object, or has no top-level
// usage object (usage absent, null or of another type), is appended
// unchanged. It allocates nothing when dst has room.
func AppendUsageCost(dst, obj, cost []byte) []byte {
	base, last := len(dst), 0
	o := topObject(obj)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		if m.is("usage") && obj[m.start] == '{' {
			dst, last = appendUsageCost(dst, obj, last, m.span, cost)
		}
	}
	if o.failed() {
		return append(dst[:base], obj...)
	}
	return append(dst, obj[last:]...)
}

// appendUsageCost appends obj[last:] up to the end of the usage object at v,
// but for its closing brace and the whitespace before it, with the cost
// members removed and the gateway's cost member appended. It returns the
// offset in obj where copying resumes. A removed member goes with the comma
// before it, or, when no kept member precedes it, with the comma after it;
// the whitespace at either end of the object stays.
func appendUsageCost(dst, obj []byte, last int, v span, cost []byte) ([]byte, int) {
	kept, removed := false, false // some member was kept, some removed before the first kept one
	end := v.start + 1            // the end of the last member
	o := openObject(obj, v)
	for {
		prev := o.i // the end of the member before, or just past the '{'
		m, ok := o.next()
		if !ok {
			break
		}
		end = m.end
		if !m.is("cost") && !m.is("cost_details") {
			if !kept && removed { // drop the comma after the removed members
				last = keyStart(obj, prev)
			}
			kept = true
			continue
		}
		switch {
		case kept: // drop it with the comma before it
			dst = append(dst, obj[last:prev]...)
		case !removed: // the first member: keep the whitespace before it
			dst = append(dst, obj[last:keyStart(obj, prev)]...)
		}
		last, removed = m.end, removed || !kept
	}
	switch {
	case kept:
		dst = append(dst, obj[last:end]...)
		dst = append(dst, ',')
		last = end
	case !removed: // an empty object
		dst = append(dst, obj[last:end]...)
		last = end
	}
	dst = append(dst, `"cost":`...)
	return append(dst, cost...), last
}

// keyStart returns the offset of the opening quote of the key of the member
// that follows b[i], the end of the previous member or the object's '{':
// only whitespace and a comma lie between.
func keyStart(b []byte, i int) int {
	return i + bytes.IndexByte(b[i:], '"')
}
