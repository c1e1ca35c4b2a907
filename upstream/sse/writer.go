package sse

import "bytes"

// Done is the data of the event that ends an OpenAI-shaped stream. It is not
// JSON: check for it with IsDone before decoding an event's data.
const Done = "[DONE]"

// AppendData appends to dst one event carrying data, in the form the gateway
// writes to its clients: "data: " + data + "\n\n". Each line of data gets its
// own "data: " line, so a line break inside data cannot end the event early or
// start a forged field. A reader joins the lines back with "\n"; SSE has no
// way to carry a CR, so CR and CRLF in data arrive as "\n".
func AppendData(dst, data []byte) []byte {
	for {
		dst = append(dst, "data: "...)
		e := indexEOL(data)
		if e < 0 {
			dst = append(dst, data...)
			break
		}
		dst = append(dst, data[:e]...)
		dst = append(dst, '\n')
		if data[e] == '\r' && e+1 < len(data) && data[e+1] == '\n' {
			e++
		}
		data = data[e+1:]
	}
	return append(dst, '\n', '\n')
}

// OneLine reports whether data holds no line break, so that AppendData
// frames it as exactly "data: " + data + "\n\n": a writer that produces
// the data in place may then put the frame around it itself.
func OneLine(data []byte) bool { return indexEOL(data) < 0 }

// AppendDone appends the event that ends an OpenAI-shaped stream,
// "data: [DONE]\n\n".
func AppendDone(dst []byte) []byte {
	return append(dst, "data: "+Done+"\n\n"...)
}

// AppendComment appends a comment, ": " + text + "\n\n". Readers ignore
// comments, which makes them the keep-alive that holds an idle stream open
// through proxies and load balancers. A line break in text starts another
// comment line rather than a field.
func AppendComment(dst []byte, text string) []byte {
	for {
		dst = append(dst, ": "...)
		e := indexEOLString(text)
		if e < 0 {
			dst = append(dst, text...)
			break
		}
		dst = append(dst, text[:e]...)
		dst = append(dst, '\n')
		if text[e] == '\r' && e+1 < len(text) && text[e+1] == '\n' {
			e++
		}
		text = text[e+1:]
	}
	return append(dst, '\n', '\n')
}

// IsDone reports whether data, with surrounding white space trimmed, is
// exactly Done.
func IsDone(data []byte) bool {
	return string(bytes.TrimSpace(data)) == Done
}

// indexEOLString is indexEOL for a string.
func indexEOLString(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return i
		}
	}
	return -1
}
