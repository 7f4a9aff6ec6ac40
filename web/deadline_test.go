package web

import (
	"context"
	"errors"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// TestDeadline: the request's context ends at its deadline when something
// waits on it, reports the deadline without starting a timer, and is
// cancelled once the handler returns, whether or not anything waited.
func TestDeadline(t *testing.T) {
	var waited, idle context.Context
	app := fiber.New()
	app.Get("/wait", deadline(50*time.Millisecond), func(c *fiber.Ctx) error {
		waited = c.UserContext()
		if at, ok := waited.Deadline(); !ok || time.Until(at) > 50*time.Millisecond {
			t.Errorf("deadline %v %v", at, ok)
		}
		if waited.Err() != nil {
			t.Errorf("ended before its deadline: %v", waited.Err())
		}
		<-waited.Done()
		if !errors.Is(waited.Err(), context.DeadlineExceeded) {
			t.Errorf("ended with %v", waited.Err())
		}
		return nil
	})
	app.Get("/idle", deadline(time.Minute), func(c *fiber.Ctx) error {
		idle = c.UserContext()
		return nil
	})
	for _, path := range []string{"/wait", "/idle"} {
		if res, err := app.Test(httptest.NewRequest("GET", path, nil), -1); err != nil || res.StatusCode != 200 {
			t.Fatal(path, err, res.StatusCode)
		}
	}
	if !errors.Is(waited.Err(), context.DeadlineExceeded) {
		t.Errorf("after the handler: %v", waited.Err())
	}
	select {
	case <-idle.Done():
	default:
		t.Fatal("a request's context outlives its handler")
	}
	if !errors.Is(idle.Err(), context.Canceled) {
		t.Errorf("after the handler: %v", idle.Err())
	}
}

// TestDeadlineChildren: database/sql derives a context from the request's
// for every query; deriving one starts no goroutine, and each ends with it.
func TestDeadlineChildren(t *testing.T) {
	parent := &lazyDeadline{at: time.Now().Add(time.Minute)}
	before := runtime.NumGoroutine()
	var children []context.Context
	for range 100 {
		child, cancel := context.WithCancel(parent)
		defer cancel()
		children = append(children, child)
	}
	if n := runtime.NumGoroutine() - before; n > 50 {
		t.Fatalf("%d goroutines for 100 derived contexts", n)
	}
	parent.end()
	for _, child := range children {
		<-child.Done()
		if !errors.Is(child.Err(), context.Canceled) {
			t.Fatalf("a derived context ended with %v", child.Err())
		}
	}
}
