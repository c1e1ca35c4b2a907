// Package sse owns Server-Sent Events framing for upstream streams: a Reader
// that turns a provider's text/event-stream body into events as they arrive,
// following the WHATWG parsing rules (CR, LF and CRLF line endings, a leading
// byte-order mark, comments, multi-line data) with a bound on the bytes one
// event may hold, so a line of any length parses and a hostile upstream cannot
// exhaust memory; and helpers that append events in the canonical form the
// gateway writes to its clients (data lines, the [DONE] sentinel, keep-alive
// comments). It deliberately knows nothing of JSON or providers: what an
// event's data means, which events end a stream and how usage is counted
// belong to the openai and anthropic packages that use it, and flushing belongs
// to the HTTP handler that writes the bytes.
package sse
