package gateway

import (
	"regexp"
	"testing"
)

func TestNewGenerationID(t *testing.T) {
	format := regexp.MustCompile(`^gen-[0-9A-Za-z]{24}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewGenerationID()
		if !format.MatchString(id) || seen[id] {
			t.Fatalf("id %q: malformed or repeated", id)
		}
		seen[id] = true
	}
}
