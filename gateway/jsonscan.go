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
	i = skipSpace(data, i+1)
	for data[i] != '}' {
		keyEnd := skipString(data, i)
		name := string(data[i+1 : keyEnd-1])
		if bytes.IndexByte(data[i:keyEnd], '\\') >= 0 {
			_ = json.Unmarshal(data[i:keyEnd], &name) // a valid JSON string: escapes such as "mod\u0065l" decoded
		}
		start := skipSpace(data, skipSpace(data, keyEnd)+1)
		end := skipValue(data, start)
		members = append(members, member{name: name, start: start, end: end})
		i = skipSpace(data, end)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return members, i
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
