package gateway

import (
	"bytes"
	"unicode/utf8"
)

// mediaTokens is what an inline file (a base64 data: URL) counts for in an
// estimate instead of its bytes: about a large image at high detail. What the
// upstream reports is what is charged.
const mediaTokens = 1000

// EstimateTokens is a conservative token count for text: ASCII bytes divided
// by 3, rounded up, plus one per other character. Real tokenizers average
// about 4 ASCII characters a token on ordinary text and seldom split a
// character of another script further.
func EstimateTokens(text string) int64 {
	var t tally
	t.add(text)
	return t.tokens()
}

// tally counts text towards an estimate without keeping it, so that a stream
// is counted as it passes.
type tally struct{ ascii, other int64 }

func (t *tally) add(text string) {
	for i := 0; i < len(text); {
		if text[i] < utf8.RuneSelf {
			t.ascii++
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(text[i:])
		t.other++
		i += size
	}
}

func (t *tally) tokens() int64 { return (t.ascii+2)/3 + t.other }

// estimateBody estimates the input of a request over its whole JSON body:
// every string and number, keys and punctuation included (which stands in for
// the per-message overhead), except whitespace between tokens and inline
// files, which count mediaTokens each. body must be valid JSON.
func estimateBody(body []byte) int64 {
	var t tally
	var media int64
	for i := 0; i < len(body); {
		switch c := body[i]; {
		case c == '"':
			end := skipString(body, i)
			s := body[i+1 : end-1]
			if isDataURL(s) {
				media++
			} else {
				t.add(string(s))
			}
			i = end
		case isSpace(c):
			i++
		default:
			t.ascii++
			i++
		}
	}
	return t.tokens() + media*mediaTokens
}

// isDataURL reports whether a JSON string's raw text is a base64 data: URL.
func isDataURL(s []byte) bool {
	head := s[:min(len(s), 256)]
	return bytes.HasPrefix(head, []byte("data:")) && bytes.Contains(head, []byte(";base64,"))
}
