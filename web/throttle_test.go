package web

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"modelswitch/db/dbtest"
)

// TestSignupThrottledPerAddress: one address may create 10 accounts an hour,
// through the API and the dashboard together; the 11th is refused with 429
// and Retry-After, while other addresses sign up as before.
func TestSignupThrottledPerAddress(t *testing.T) {
	signup := func(addr string) response {
		return callFrom(t, addr, "POST", "/api/auth/signup", "", map[string]string{"email": dbtest.Email("flood"), "password": "flood-password"})
	}
	b := newClient(t) // from testAddr(t), as the API calls below
	wantStatus(t, b.do("GET", "/signup", nil, false), 200)
	wantStatus(t, b.post("/signup", url.Values{"email": {dbtest.Email("flood")}, "password": {"flood-password"}}, false), 303)
	b.post("/signout", nil, false)
	for range 9 {
		expect(t, signup(testAddr(t)), 201)
	}
	r := expect(t, signup(testAddr(t)), 429)
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 3600 ||
		r.errCode() != "too_many_signups" || !strings.Contains(r.raw, "at most 10 an hour") {
		t.Fatalf("11th sign-up: %s %v", r.raw, r.header)
	}
	// The dashboard says so above the form, keeping the email typed.
	email := dbtest.Email("flood")
	wantStatus(t, b.do("GET", "/signup", nil, false), 200)
	p := wantStatus(t, b.post("/signup", url.Values{"email": {email}, "password": {"flood-password"}}, false), 429)
	if !strings.Contains(p.find("form-error").Text(), "Too many accounts") || p.header.Get("Retry-After") == "" ||
		p.doc.Find(`input[name="email"]`).AttrOr("value", "") != email {
		t.Fatalf("throttled sign-up page: %v\n%s", p.header, p.body)
	}
	expect(t, signup(newAddr()), 201)
}

// TestSignInOwnerNotLockedOut: a guesser at another address locks only
// itself out of the account; the owner signs in from their own address,
// through the API and the dashboard.
func TestSignInOwnerNotLockedOut(t *testing.T) {
	b, email := signedUp(t) // at testAddr(t)
	b.post("/signout", nil, false)
	guesser := newAddr()
	for range 5 {
		expect(t, callFrom(t, guesser, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}), 401)
	}
	r := expect(t, callFrom(t, guesser, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "page-password"}), 429)
	if r.header.Get("Retry-After") == "" || r.errCode() != "too_many_attempts" {
		t.Fatalf("guesser: %s %v", r.raw, r.header)
	}
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "page-password"}), 200)
	wantStatus(t, b.do("GET", "/signin", nil, false), 200)
	p := wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)
	if p.header.Get("Location") != "/dashboard/keys" {
		t.Fatalf("owner's sign-in goes to %q", p.header.Get("Location"))
	}
}
