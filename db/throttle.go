package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lib/pq"

	"modelswitch/errs"
)

// Rate counts: events per scope in fixed windows, in PostgreSQL so that
// every replica sees the same counts.
//
// hit records one event against scope and reports, when the window's count
// is over limit, how long until the window ends. Counting before the work
// keeps concurrent requests from slipping past the limit.
func (p *pool) hit(ctx context.Context, scope string, limit int, window time.Duration) (retry time.Duration, err error) {
	var row struct {
		Hits int       `db:"hits"`
		End  time.Time `db:"window_end"`
		Now  time.Time `db:"now"`
	}
	err = p.GetContext(ctx, &row, `
		INSERT INTO rate_counts AS r (scope, hits, window_start, window_end)
		VALUES ($1, 1, now(), now() + make_interval(secs => $2))
		ON CONFLICT (scope) DO UPDATE SET
			hits         = CASE WHEN r.window_end <= now() THEN 1 ELSE r.hits + 1 END,
			window_start = CASE WHEN r.window_end <= now() THEN now() ELSE r.window_start END,
			window_end   = CASE WHEN r.window_end <= now() THEN now() + make_interval(secs => $2) ELSE r.window_end END
		RETURNING hits, window_end, now() AS now`, scope, window.Seconds())
	if err != nil || row.Hits <= limit {
		return 0, err
	}
	return row.End.Sub(row.Now), nil
}

// Sign-in attempts are counted three ways. Per account from one address,
// tightly: a guesser there is stopped soon. Per account, loosely: a guesser
// spread over many addresses is stopped too, while the owner at their own
// address is not locked out by failures elsewhere until then. Per address,
// whatever accounts it tries.
const (
	throttleWindow     = 15 * time.Minute
	maxPairAttempts    = 5   // per account and address, and window
	maxAccountAttempts = 100 // per account and window
	maxAddrAttempts    = 50  // per address and window
)

// throttle names the counts a sign-in attempt is charged to. The email is
// hashed, so that any input makes a short key.
type throttle struct{ addr, pair, account string }

func newThrottle(email, clientIP string) throttle {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	account, addr := hex.EncodeToString(sum[:]), addrKey(clientIP)
	return throttle{addr: "ip:" + addr, pair: "email-ip:" + account + "/" + addr, account: "email:" + account}
}

// addrKey is what a client is counted by: its address or, for IPv6, its /64,
// which one subscriber holds whole and may take any address of.
func addrKey(clientIP string) string {
	a, err := netip.ParseAddr(clientIP)
	if err != nil {
		return clientIP
	}
	if a = a.Unmap(); a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// count records one sign-in attempt against the address, then the account
// from that address, then the account, and refuses it as soon as one is over
// its limit. An attempt refused at one count is not charged to the next, so
// that one address charges an account at most the tight limit.
func (s *Store) count(ctx context.Context, t throttle) error {
	for _, scope := range []struct {
		key   string
		limit int
	}{{t.addr, maxAddrAttempts}, {t.pair, maxPairAttempts}, {t.account, maxAccountAttempts}} {
		retry, err := s.auth.hit(ctx, scope.key, scope.limit, throttleWindow)
		if err != nil {
			return err
		}
		if retry > 0 {
			return &errs.Error{Kind: errs.RateLimited, Code: "too_many_attempts", RetryAfter: retry,
				Message: fmt.Sprintf("Too many sign-in attempts. Try again in %d minutes.", int(retry.Minutes())+1)}
		}
	}
	return nil
}

// forgive clears the account's count from this address after a successful
// sign-in, and takes this attempt back from the address's and the account's:
// the owner's sign-in does not wipe out failures from elsewhere.
func (s *Store) forgive(ctx context.Context, t throttle) error {
	return s.takeBack(ctx, []string{t.pair}, []string{t.addr, t.account})
}

// uncount takes back an attempt that was never checked.
func (s *Store) uncount(ctx context.Context, t throttle) error {
	return s.takeBack(ctx, nil, []string{t.addr, t.pair, t.account})
}

// takeBack deletes the counts of clear and takes one event back from those
// of back.
func (s *Store) takeBack(ctx context.Context, clear, back []string) error {
	_, err := s.auth.ExecContext(ctx, `
		WITH gone AS (DELETE FROM rate_counts WHERE scope = ANY($1) OR (scope = ANY($2) AND hits <= 1))
		UPDATE rate_counts SET hits = hits - 1 WHERE scope = ANY($2) AND hits > 1`,
		pq.Array(clear), pq.Array(back))
	return err
}

// Sign-ups are counted per client address: each costs a password hash and
// makes an account, with sign-up credits when they are granted.
const (
	signupWindow          = time.Hour
	defaultSignupsPerHour = 10
)

// countSignup records one sign-up from clientIP and refuses it with 429 when
// the address has made more than the store's SignupsPerHour this hour. It
// returns the count's scope, for uncounting a sign-up that did nothing.
func (s *Store) countSignup(ctx context.Context, clientIP string) (scope string, err error) {
	limit := s.SignupsPerHour
	if limit <= 0 {
		limit = defaultSignupsPerHour
	}
	scope = "signup:" + addrKey(clientIP)
	retry, err := s.auth.hit(ctx, scope, limit, signupWindow)
	if err != nil || retry == 0 {
		return scope, err
	}
	return scope, &errs.Error{Kind: errs.RateLimited, Code: "too_many_signups", RetryAfter: retry,
		Message: fmt.Sprintf("Too many accounts were created from your address: at most %d an hour. Try again in %d minutes, or sign in to an account you have.",
			limit, int(retry.Minutes())+1)}
}

// KeyWriteWindow is the window of CountKeyWrite's limit.
const KeyWriteWindow = time.Minute

// CountKeyWrite records one write to keys by a billing key or a dashboard
// session (scope names which) and refuses it with 429 when there have been
// more than perMinute in the current minute.
func (s *Store) CountKeyWrite(ctx context.Context, scope string, perMinute int) error {
	retry, err := s.db.hit(ctx, "writes:"+scope, perMinute, KeyWriteWindow)
	if err != nil || retry == 0 {
		return err
	}
	return &errs.Error{Kind: errs.RateLimited, Code: "rate_limited", RetryAfter: retry,
		Message: fmt.Sprintf("Too many changes to keys: at most %d a minute. Try again in %d seconds.",
			perMinute, int(retry.Seconds())+1)}
}
