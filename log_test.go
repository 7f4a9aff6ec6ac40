package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// stalledOutput is a log output whose first write waits until release.
type stalledOutput struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writing chan struct{} // closed when the first write begins
	release chan struct{}
	once    sync.Once
}

func (o *stalledOutput) Write(p []byte) (int, error) {
	o.once.Do(func() { close(o.writing); <-o.release })
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// TestLogWriterNeverMakesWritersWaitOnTheOutput: while the output is stuck
// in a write, log lines are still taken at once; every line comes out
// whole and in order once it moves again, and Close writes out the rest.
func TestLogWriterNeverMakesWritersWaitOnTheOutput(t *testing.T) {
	out := &stalledOutput{writing: make(chan struct{}), release: make(chan struct{})}
	l := newLogWriter(out)
	line := func(w, i int) string { return fmt.Sprintf("writer %d line %05d %s\n", w, i, strings.Repeat("x", 100)) }
	// Enough for the goroutine to start writing, and to stall there.
	for i := 0; i < logFlushAt/100; i++ {
		l.Write([]byte(line(0, i)))
	}
	<-out.writing
	var wg sync.WaitGroup
	for w := 1; w <= 4; w++ {
		wg.Go(func() {
			for i := range 2000 { // 1 MiB in all: below logMaxPending, so no writer waits
				l.Write([]byte(line(w, i)))
			}
		})
	}
	wg.Wait() // returns while the output is still stuck
	close(out.release)
	l.Close()
	next := map[int]int{}
	lines := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	for _, got := range lines {
		var w, i int
		if _, err := fmt.Sscanf(got, "writer %d line %d", &w, &i); err != nil || got+"\n" != line(w, i) || i != next[w] {
			t.Fatalf("line %q out of order or broken (next from writer %d: %d)", got, w, next[w])
		}
		next[w]++
	}
	if len(lines) != logFlushAt/100+4*2000 {
		t.Fatalf("%d lines written out, want %d", len(lines), logFlushAt/100+4*2000)
	}
}
