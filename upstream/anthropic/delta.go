package anthropic

import "bytes"

// Deltas the fast path reads.
const (
	fastText = iota + 1
	fastJSON
)

// fastDelta recognizes, byte for byte, a text or input_json delta in the
// exact form Anthropic writes it, and returns which it is, its block index
// and its text or partial JSON as a string literal. It is the fast path of a
// stream: anything else, deltas written otherwise included, goes through
// encoding/json, whose reading of these forms is the same.
func fastDelta(data []byte) (kind int, index int64, literal []byte) {
	const (
		open  = `{"type":"content_block_delta","index":`
		text  = `,"delta":{"type":"text_delta","text":`
		args  = `,"delta":{"type":"input_json_delta","partial_json":`
		close = `}}`
	)
	if !bytes.HasPrefix(data, []byte(open)) {
		return 0, 0, nil
	}
	i := len(open)
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		for ; i < len(data) && data[i] >= '0' && data[i] <= '9'; i++ {
			if i-len(open) == 18 {
				return 0, 0, nil // not an index a stream reaches
			}
			index = index*10 + int64(data[i]-'0')
		}
	default:
		return 0, 0, nil
	}
	switch {
	case bytes.HasPrefix(data[i:], []byte(text)):
		kind, i = fastText, i+len(text)
	case bytes.HasPrefix(data[i:], []byte(args)):
		kind, i = fastJSON, i+len(args)
	default:
		return 0, 0, nil
	}
	end := stringEnd(data, i)
	if end < 0 || string(bytes.TrimRight(data[end:], " \t\r\n")) != close {
		return 0, 0, nil
	}
	return kind, index, data[i:end]
}

// stringEnd returns the offset just past the JSON string literal that opens
// at data[i], or -1 if there is no valid one.
func stringEnd(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	for i++; i < len(data); {
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c != '\\':
			i++
		case i+1 >= len(data):
			return -1
		default:
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(data) || !isHex4(data[i+2:i+6]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		}
	}
	return -1
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
