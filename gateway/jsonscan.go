package gateway

// A small scanner over JSON already checked by json.Valid: it finds where
// values begin and end, so that a body can be edited in place and every byte
// the client sent, numbers included, reaches the upstream unchanged.

import (
	"bytes"
	"encoding/json"
	"slices"
)

// member is one "name": value pair of a JSON object; its value is
// data[start:end].
type member struct {
	name       string
	start, end int
}

// scanObject lists the members of the object that begins at data[i] and
// returns the index of its closing brace.
func scanObject(data []byte, i int) (members []member, closing int) {
	closing = eachMember(data, i, func(key []byte, start, end int) {
		members = append(members, member{name: jsonString(key), start: start, end: end})
	})
	return members, closing
}

// eachMember calls f with each member of the object that begins at data[i],
// in order: its key as sent (quotes included) and its value's bounds. It
// returns the index of the closing brace.
func eachMember(data []byte, i int, f func(key []byte, start, end int)) (closing int) {
	i = skipSpace(data, i+1)
	for data[i] != '}' {
		keyEnd := skipString(data, i)
		start := skipSpace(data, skipSpace(data, keyEnd)+1)
		end := skipValue(data, start)
		f(data[i:keyEnd], start, end)
		i = skipSpace(data, end)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return i
}

// jsonString is the text of a valid JSON string, escapes such as
// "mod\u0065l" decoded.
func jsonString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// keyIs reports whether a key as sent (quotes included) is name.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1:len(key)-1]) == name
	}
	return jsonString(key) == name
}

// scanArray lists where the elements of the array that begins at data[i]
// begin.
func scanArray(data []byte, i int) (starts []int) {
	for i = skipSpace(data, i+1); data[i] != ']'; {
		starts = append(starts, i)
		i = skipSpace(data, skipValue(data, i))
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return starts
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string that begins at data[i].
func skipString(data []byte, i int) int {
	for i++; ; i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the value that begins at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch data[i] {
			case '"':
				i = skipString(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default: // a number, true, false or null
		for i < len(data) && !isSpace(data[i]) && data[i] != ',' && data[i] != '}' && data[i] != ']' {
			i++
		}
		return i
	}
}

// edit replaces data[start:end] with text.
type edit struct {
	start, end int
	text       string
}

// apply makes edits, which must not overlap, on a copy of data.
func apply(data []byte, edits []edit) []byte {
	out := make([]byte, 0, len(data)+64)
	at := 0
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	for _, e := range edits {
		out = append(out, data[at:e.start]...)
		out = append(out, e.text...)
		at = e.end
	}
	return append(out, data[at:]...)
}
