package db

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"modelswitch/db/money"
	"modelswitch/errs"
)

// The meter admits and charges inferences without writing the account's
// balances row for each one: that row was the gateway's bottleneck.
//
// Leases. A replica (a Store and its Meter) reserves a slice of an
// account's available balance in one atomic statement, as a leases row
// (key_id 0) whose amount is part of balances.held; for a key with a spend
// limit it also reserves a slice of the key's limit (a leases row for the
// key, part of api_keys.held), in the same transaction. Requests then admit
// from memory: each holds its most possible cost against what the leases
// have left, with no write. A lease with too little left is topped up in
// one transaction, sized for the requests waiting plus leaseAhead of recent
// admissions, and never more than its need plus half of what the account
// (or key) has beyond it, so that one replica never takes all that is left.
// When not even the request fits, the answer is the hold's 402.
//
// Batched settlement. A finished request spends its cost from the lease in
// memory and queues its usage entry. Every meterFlushEvery (sooner when a
// queue is long) the meter writes each account's queue in one transaction:
// the entries in order with their balance_after, the balance's usage and
// held (the lease shrinks by what was spent), the keys' usage, usage_hourly
// and the leases. The ledger invariant (migrations/0005_leases.sql) holds
// after every transaction.
//
// Idle return and expiry. A lease with nothing in flight and no use for
// leaseIdleAfter is returned, so held is back to 0 within a second of the
// last request. Leases carry expires_at, renewed by the replica's writes
// while it lives (at least every LeaseTTL/3); the leases of a replica that
// died are released by a sweep once expired (every meter's, every
// LeaseTTL/3, and ReleaseExpiredHolds).
//
// What a kill -9 of a replica costs: the usage it had not written yet (what
// it answered in its last meterFlushEvery, all within its leases: free
// requests, never an overspend), and its leases stay held, unavailable to
// the account, until they expire (LeaseTTL) and the next sweep.
//
// Every write of a lease locks rows in one order, the lease rows first, then
// keys by id, then the balance, so writes never deadlock; and each checks
// that the lease rows are as this replica left them (a replica that stalled
// past its leases' expiry may have had them swept), reading them back when
// they are not.

const (
	// DefaultLeaseTTL is how long a lease outlives its replica's last write.
	DefaultLeaseTTL = 30 * time.Second
	// meterFlushEvery is how often queued usage is written: well within the
	// second in which a finished request must show.
	meterFlushEvery = 200 * time.Millisecond
	// leaseIdleAfter is how long a lease with nothing in flight waits before
	// it is returned: with meterFlushEvery, held is back to 0 within a
	// second of the last request.
	leaseIdleAfter = 500 * time.Millisecond
	// leaseAhead is how much of the recent admission rate a top-up reserves
	// beyond what is needed now: a busy account tops up about once per
	// leaseAhead.
	leaseAhead = 2 * time.Second
	// meterFlushBatch is a queue long enough to write before the tick.
	meterFlushBatch = 1000
	// meterWorkers bounds the accounts written at once, leaving the other
	// connections of the pool to requests.
	meterWorkers = 4
	// meterWriteTimeout bounds one account's write.
	meterWriteTimeout = 10 * time.Second
)

// ErrShuttingDown refuses requests that arrive after the meter closed.
var ErrShuttingDown = &errs.Error{Kind: errs.Unavailable, Code: "shutting_down", RetryAfter: time.Second,
	Message: "This server is shutting down. Nothing was changed; retry in a second."}

// errLeaseMismatch rolls back a write that found a lease row not as this
// replica left it: the replica reads its leases back and tries again.
var errLeaseMismatch = errors.New("db: a lease is not as this replica left it")

// errAccountGone: the account was deleted, with its balance and leases,
// while this replica still had its usage to write.
var errAccountGone = errors.New("db: the account was deleted")

// Meter is the store's meter: one per process in production. Set its
// LeaseTTL and Log before the first request. A store's copies share it,
// but for WithClock, whose copy is a replica of its own on its own clock.
func (s *Store) Meter() *Meter { return s.meter }

// Meter admits inferences against leases and writes their usage in batches.
type Meter struct {
	// LeaseTTL is how long a lease outlives this replica's last write; the
	// leases of a replica killed outright stay held this long. Default
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Log receives write failures; default slog.Default().
	Log *slog.Logger

	s       *Store
	replica string

	mu       sync.Mutex
	accounts map[int64]*meterAccount
	started  bool
	closed   bool
	lastTick time.Time

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newMeter(s *Store) *Meter {
	raw := make([]byte, 16)
	rand.Read(raw)
	return &Meter{s: s, replica: hex.EncodeToString(raw),
		accounts: map[int64]*meterAccount{},
		kick:     make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

func (m *Meter) ttl() time.Duration {
	if m.LeaseTTL > 0 {
		return m.LeaseTTL
	}
	return DefaultLeaseTTL
}

func (m *Meter) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// meterAccount is what this replica holds and owes for one account.
type meterAccount struct {
	userID int64
	// write serializes the account's writes (top-ups, flushes, returns), so
	// that each knows the lease amounts it changes.
	write sync.Mutex

	// The rest is guarded by Meter.mu.
	balance *budget           // the lease on the account's balance
	keys    map[int64]*budget // leases on limited keys
	tickets map[*Ticket]time.Time
	queue   []meterCharge // finished, not yet written
	pending []meterCharge // a batch whose write failed or is under way
	users   int           // goroutines holding or waiting for write
	resync  bool          // a write failed: read the leases back first
	renewed time.Time
	failing bool
}

// budget is one lease and what draws on it: free = lease - inflight - spent.
type budget struct {
	keyID    int64     // 0: the account's balance
	lease    money.USD // the leases row's amount, as this replica left it
	hasRow   bool
	busy     bool      // a write is changing the lease: admit nothing from it
	inflight money.USD // holds of requests in flight
	spent    money.USD // costs charged and not yet written
	waiting  money.USD // holds of requests waiting for a top-up
	admitted money.USD // holds admitted since the last tick
	rate     float64   // holds admitted per second, smoothed
	lastUse  time.Time
	// A key's lease was reserved under this limit and reset; another
	// policy means reserving again.
	limit    money.USD
	reset    string
	reserved bool
}

func (p *budget) free() money.USD      { return p.lease - p.inflight - p.spent }
func (p *budget) committed() money.USD { return p.inflight + p.spent }

func (p *budget) matches(k keyPolicy) bool {
	return p.reserved && k.Limit != nil && p.limit == *k.Limit && p.reset == orEmpty(k.Reset)
}

func orEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// meterCharge is one finished inference waiting to be written.
type meterCharge struct {
	keyID int64
	key   *budget // the key's lease it drew on; nil for a key without a limit
	at    time.Time
	u     Usage
}

// Ticket is one admitted inference: Finish charges it and releases the rest.
type Ticket struct {
	m      *Meter
	a      *meterAccount
	key    *budget
	keyID  int64
	amount money.USD
	done   bool // guarded by m.mu
}

// keyPolicy is what admission reads of the key on every request, so that a
// change of models or limit holds from the very next request.
type keyPolicy struct {
	Models pq.StringArray `db:"models"`
	Limit  *money.USD     `db:"spend_limit"`
	Reset  *string        `db:"limit_reset"`
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

func (s *Store) keyPolicy(ctx context.Context, userID, keyID int64) (keyPolicy, error) {
	var k keyPolicy
	err := s.db.GetContext(ctx, &k, `
		SELECT models, spend_limit, limit_reset FROM api_keys WHERE id = $1 AND user_id = $2 AND kind = 'proxy'`, keyID, userID)
	if isNoRows(err) {
		return k, ErrUnknownKey // deleted since it authenticated the request
	}
	return k, err
}

// Admit holds amount, the most the request can cost, against the account's
// balance and the key's limit, after checking that the key may use model.
// It fails with ErrModelNotAllowed, ErrKeyLimitExceeded or
// ErrInsufficientCredits and then holds nothing. The hold comes from this
// replica's leases, topped up when they have too little left.
func (m *Meter) Admit(ctx context.Context, userID, keyID int64, model string, amount money.USD) (*Ticket, error) {
	k, err := m.s.keyPolicy(ctx, userID, keyID)
	if err != nil {
		return nil, err
	}
	return m.admit(ctx, userID, keyID, k, model, amount)
}

// AdmitKey is Admit for a key the caller has just read, which saves a
// query. Only for a key read from a source that sees every change of its
// models and limit at once: the next request must obey a change.
func (m *Meter) AdmitKey(ctx context.Context, k Key, model string, amount money.USD) (*Ticket, error) {
	return m.admit(ctx, k.UserID, k.ID, keyPolicy{Models: k.Models, Limit: k.Limit, Reset: k.LimitReset}, model, amount)
}

func (m *Meter) admit(ctx context.Context, userID, keyID int64, k keyPolicy, model string, amount money.USD) (*Ticket, error) {
	if amount < 0 {
		return nil, fmt.Errorf("hold of a negative amount %s", amount)
	}
	if amount > money.Max {
		// More than any balance holds (a max_tokens near 2^63): refused
		// before any sum with it could overflow.
		return nil, ErrInsufficientCredits
	}
	if k.Models != nil && !slices.Contains(k.Models, model) {
		return nil, ErrModelNotAllowed
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if !m.started {
		m.started, m.lastTick = true, time.Now()
		go m.run()
	}
	a := m.accountLocked(userID)
	t := &Ticket{m: m, a: a, keyID: keyID, amount: amount}
	if k.Limit != nil {
		t.key = a.keyPool(keyID)
	}
	if m.admitLocked(t, k) {
		m.mu.Unlock()
		return t, nil
	}
	// Too little left here: take turns with the account's other writes and
	// reserve more. Waiting requests are counted, so that one top-up covers
	// a burst.
	a.users++
	t.wait(amount)
	m.mu.Unlock()
	a.write.Lock()
	defer func() {
		a.write.Unlock()
		m.mu.Lock()
		a.users--
		m.mu.Unlock()
	}()
	m.mu.Lock()
	t.wait(-amount)
	m.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := m.resyncIfNeeded(ctx, a); err != nil {
			return nil, err
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrShuttingDown
		}
		if m.admitLocked(t, k) {
			m.mu.Unlock()
			return t, nil
		}
		if attempt == 5 { // others keep changing the leases: rare, and safe to retry
			m.mu.Unlock()
			return nil, ErrBusy
		}
		plan := m.planReserveLocked(t, k)
		m.mu.Unlock()

		grants, err := m.reserve(ctx, a, plan)

		m.mu.Lock()
		for i, r := range plan {
			r.p.busy = false
			if err == nil {
				r.p.lease, r.p.hasRow = grants[i], true
				if r.p.keyID != 0 {
					r.p.limit, r.p.reset, r.p.reserved = r.limit, r.reset, true
				}
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, errLeaseMismatch):
			a.resync = true
		case err == ErrInsufficientCredits || err == ErrKeyLimitExceeded || err == ErrUnknownKey:
			m.mu.Unlock()
			return nil, err
		default: // the commit may have happened: read the leases back before the next write
			a.resync = true
			m.mu.Unlock()
			return nil, err
		}
		m.mu.Unlock()
	}
}

func (t *Ticket) wait(amount money.USD) {
	t.a.balance.waiting += amount
	if t.key != nil {
		t.key.waiting += amount
	}
}

func (m *Meter) accountLocked(userID int64) *meterAccount {
	a := m.accounts[userID]
	if a == nil {
		a = &meterAccount{userID: userID, balance: &budget{}, keys: map[int64]*budget{}, tickets: map[*Ticket]time.Time{}}
		m.accounts[userID] = a
	}
	return a
}

func (a *meterAccount) keyPool(keyID int64) *budget {
	p := a.keys[keyID]
	if p == nil {
		p = &budget{keyID: keyID}
		a.keys[keyID] = p
	}
	return p
}

// admitLocked holds t's amount from memory if the leases have it left.
func (m *Meter) admitLocked(t *Ticket, k keyPolicy) bool {
	b, kp := t.a.balance, t.key
	if b.busy || b.free() < t.amount {
		return false
	}
	if kp != nil && (kp.busy || !kp.matches(k) || kp.free() < t.amount) {
		return false
	}
	now := time.Now()
	for _, p := range []*budget{b, kp} {
		if p != nil {
			p.inflight += t.amount
			p.admitted += t.amount
			p.lastUse = now
		}
	}
	t.a.tickets[t] = now
	return true
}

// leaseReservation is one lease to set: to at least need, at most want.
type leaseReservation struct {
	p          *budget
	was        money.USD
	hasRow     bool
	need, want money.USD
	limit      money.USD // a key's: the policy reserved under
	reset      string
	// A refill only grows a lease, and is skipped when it cannot: requests
	// keep admitting from the lease meanwhile, since they never take more
	// than was left of it.
	refill bool
}

func (m *Meter) planReserveLocked(t *Ticket, k keyPolicy) []leaseReservation {
	var plan []leaseReservation
	add := func(p *budget) {
		need := p.committed() + t.amount
		want := min(need+p.waiting+p.ahead(), money.Max)
		r := leaseReservation{p: p, was: p.lease, hasRow: p.hasRow, need: need, want: max(want, need)}
		if p.keyID != 0 {
			r.limit, r.reset = *k.Limit, orEmpty(k.Reset)
		}
		p.busy = true
		plan = append(plan, r)
	}
	// Keys before the balance: the order of every ledger write.
	if kp := t.key; kp != nil && (!kp.matches(k) || kp.free() < t.amount) {
		add(kp)
	}
	if t.a.balance.free() < t.amount {
		add(t.a.balance)
	}
	return plan
}

// leaseRow is one of this replica's leases as stored.
type leaseRow struct {
	KeyID  int64     `db:"key_id"`
	Amount money.USD `db:"amount"`
}

// reserve sets each planned lease to between its need and its want, capped
// at its need plus half of what the account (or key) has beyond it, so that
// one replica never takes all that is left. It returns the new amounts.
func (m *Meter) reserve(ctx context.Context, a *meterAccount, plan []leaseReservation) ([]money.USD, error) {
	grants := make([]money.USD, len(plan))
	now := m.s.now()
	err := m.s.withTx(ctx, func(tx *sqlx.Tx) error {
		var rows []leaseRow
		if err := tx.SelectContext(ctx, &rows, `
			SELECT key_id, amount FROM leases WHERE replica = $1 AND user_id = $2 ORDER BY key_id FOR UPDATE`,
			m.replica, a.userID); err != nil {
			return err
		}
		for _, r := range plan {
			i := slices.IndexFunc(rows, func(l leaseRow) bool { return l.KeyID == r.p.keyID })
			if (i >= 0) != r.hasRow || i >= 0 && rows[i].Amount != r.was {
				return errLeaseMismatch
			}
		}
		for i, r := range plan {
			var err error
			if r.p.keyID != 0 {
				// room is what the key may still spend, counting this lease
				// as free; NULL when the key has no limit any more.
				err = tx.GetContext(ctx, &grants[i], `
					WITH cur AS (
						SELECT id, key_window_start(limit_reset, $3::timestamptz) AS win,
							CASE WHEN window_start = key_window_start(limit_reset, $3::timestamptz) THEN window_usage ELSE 0 END AS used,
							spend_limit - CASE WHEN window_start = key_window_start(limit_reset, $3::timestamptz) THEN window_usage ELSE 0 END
								- held + $4::bigint AS room
						FROM api_keys WHERE id = $1 AND user_id = $2 AND kind = 'proxy' FOR UPDATE),
					g AS (
						SELECT id, win, used, room,
							CASE WHEN room IS NULL THEN $6::bigint ELSE LEAST($6::bigint, $5::bigint + (room - $5::bigint) / 2) END AS grant_
						FROM cur)
					UPDATE api_keys k SET window_usage = g.used, window_start = g.win, held = k.held - $4::bigint + g.grant_
					FROM g WHERE k.id = g.id AND (g.room IS NULL OR g.room >= $5::bigint) AND (NOT $7 OR g.grant_ > $4::bigint)
					RETURNING g.grant_`,
					r.p.keyID, a.userID, now, r.was, r.need, r.want, r.refill)
				if isNoRows(err) && r.refill {
					grants[i], err = r.was, nil
				}
				if isNoRows(err) {
					var exists bool
					if err := tx.GetContext(ctx, &exists, `
						SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1 AND user_id = $2 AND kind = 'proxy')`,
						r.p.keyID, a.userID); err != nil {
						return err
					}
					if !exists {
						return ErrUnknownKey
					}
					return ErrKeyLimitExceeded
				}
			} else {
				err = tx.GetContext(ctx, &grants[i], `
					WITH cur AS (
						SELECT user_id, credits - usage - held + $2::bigint AS room FROM balances WHERE user_id = $1 FOR UPDATE),
					g AS (
						SELECT user_id, room, LEAST($4::bigint, $3::bigint + (room - $3::bigint) / 2) AS grant_ FROM cur)
					UPDATE balances b SET held = b.held - $2::bigint + g.grant_
					FROM g WHERE b.user_id = g.user_id AND g.room >= $3::bigint AND (NOT $5 OR g.grant_ > $2::bigint)
					RETURNING g.grant_`,
					a.userID, r.was, r.need, r.want, r.refill)
				if isNoRows(err) && r.refill {
					grants[i], err = r.was, nil
				}
				if isNoRows(err) {
					return ErrInsufficientCredits
				}
			}
			if err != nil {
				return err
			}
		}
		keys, amounts := make([]int64, len(plan)), make([]int64, len(plan))
		for i, r := range plan {
			keys[i], amounts[i] = r.p.keyID, int64(grants[i])
		}
		_, err := tx.ExecContext(ctx, `
			INSERT INTO leases (replica, user_id, key_id, amount, expires_at)
			SELECT $1, $2, v.key_id, v.amount, $3 FROM unnest($4::bigint[], $5::bigint[]) AS v(key_id, amount)
			ON CONFLICT (replica, user_id, key_id) DO UPDATE SET amount = EXCLUDED.amount, expires_at = EXCLUDED.expires_at`,
			m.replica, a.userID, now.Add(m.ttl()), pq.Array(keys), pq.Array(amounts))
		return err
	})
	return grants, err
}

// Finish ends the ticket: it charges u.Cost as one usage entry when u is not
// nil, even past the hold (the contract charges the actual cost), and
// releases the rest. The entry is written within meterFlushEvery, or at
// once after Close. Finish never fails: a write that fails is retried.
func (t *Ticket) Finish(u *Usage) {
	m, a := t.m, t.a
	at := m.s.now()
	m.mu.Lock()
	if t.done {
		m.mu.Unlock()
		return
	}
	m.finishLocked(t, u, at)
	closed, long := m.closed, len(a.queue) >= meterFlushBatch
	if closed {
		a.users++
	}
	m.mu.Unlock()
	switch {
	case closed: // no loop writes it any more
		ctx, cancel := context.WithTimeout(context.Background(), meterWriteTimeout)
		defer cancel()
		if err := m.sync(ctx, a, true); err != nil {
			m.log().Error("write metered usage after shutdown", "user_id", a.userID, "error", err)
		}
		m.mu.Lock()
		a.users--
		m.mu.Unlock()
	case long:
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

func (m *Meter) finishLocked(t *Ticket, u *Usage, at time.Time) {
	t.done = true
	a := t.a
	delete(a.tickets, t)
	now := time.Now()
	for _, p := range []*budget{a.balance, t.key} {
		if p == nil {
			continue
		}
		p.inflight -= t.amount
		p.lastUse = now
		if u != nil {
			p.spent += u.Cost
		}
	}
	if u != nil {
		a.queue = append(a.queue, meterCharge{keyID: t.keyID, key: t.key, at: at.Truncate(time.Microsecond), u: *u})
	}
}

// run writes queued usage every meterFlushEvery, returns idle leases,
// renews live ones and sweeps the expired leases of dead replicas, until
// Close.
func (m *Meter) run() {
	defer close(m.done)
	m.log().Info("metering inferences with leases", "replica", m.replica, "lease_ttl", m.ttl().String())
	t := time.NewTicker(meterFlushEvery)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
		}
		m.tick()
		if time.Since(lastSweep) >= m.ttl()/3 {
			lastSweep = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), meterWriteTimeout)
			if n, err := m.s.releaseExpiredLeases(ctx); err != nil {
				m.log().Warn("sweep expired leases", "error", err)
			} else if n > 0 {
				m.log().Info("released expired leases of stopped replicas", "count", n)
			}
			cancel()
		}
	}
}

// tick updates the admission rates, drops tickets that outlived any
// request, and writes every account that has something to write.
func (m *Meter) tick() {
	now := time.Now()
	m.mu.Lock()
	elapsed := max(now.Sub(m.lastTick).Seconds(), 0.001)
	m.lastTick = now
	var todo []*meterAccount
	for id, a := range m.accounts {
		for _, p := range a.pools() {
			p.rate = (p.rate + float64(p.admitted)/elapsed) / 2
			p.admitted = 0
		}
		for t, since := range a.tickets {
			if now.Sub(since) > HoldTTL { // a request that never finished: a bug, released as a hold would be
				m.log().Error("an inference never finished; releasing its hold", "user_id", a.userID, "key_id", t.keyID)
				m.finishLocked(t, nil, m.s.now())
			}
		}
		switch {
		case m.needsSyncLocked(a, now, false):
			a.users++
			todo = append(todo, a)
		case a.users == 0 && a.emptyLocked():
			delete(m.accounts, id)
		}
	}
	m.mu.Unlock()
	m.syncEach(context.Background(), todo, false)
	m.refillEach(context.Background())
}

// refillEach tops up, ahead of need, the leases that busy accounts are
// running low on, so that their requests never wait for a top-up.
func (m *Meter) refillEach(parent context.Context) {
	m.mu.Lock()
	var todo []*meterAccount
	for _, a := range m.accounts {
		if slices.ContainsFunc(a.pools(), (*budget).low) {
			a.users++
			todo = append(todo, a)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, meterWorkers)
	for _, a := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(parent, meterWriteTimeout)
			defer cancel()
			if err := m.refill(ctx, a); err != nil {
				m.log().Warn("top up a lease", "user_id", a.userID, "error", err)
			}
			m.mu.Lock()
			a.users--
			m.mu.Unlock()
		})
	}
	wg.Wait()
}

// low tells whether a lease in use has less than half of leaseAhead of its
// recent admissions left.
func (p *budget) low() bool {
	ahead := p.ahead()
	return p.hasRow && !p.busy && p.free() < ahead/2 && time.Since(p.lastUse) < leaseIdleAfter &&
		(p.keyID == 0 || p.reserved)
}

// ahead is leaseAhead of the recent admissions.
func (p *budget) ahead() money.USD {
	return money.USD(min(p.rate*leaseAhead.Seconds(), float64(money.Max)))
}

func (m *Meter) refill(ctx context.Context, a *meterAccount) error {
	a.write.Lock()
	defer a.write.Unlock()
	if err := m.resyncIfNeeded(ctx, a); err != nil {
		return err
	}
	m.mu.Lock()
	var plan []leaseReservation
	for _, p := range a.pools() {
		if !p.low() {
			continue
		}
		need := p.committed()
		plan = append(plan, leaseReservation{p: p, was: p.lease, hasRow: p.hasRow, need: need,
			want: min(need+p.waiting+p.ahead(), money.Max), limit: p.limit, reset: p.reset, refill: true})
	}
	m.mu.Unlock()
	// Keys by id, then the balance: the order of every ledger write.
	slices.SortFunc(plan, func(x, y leaseReservation) int { return cmp.Compare(lockRank(x.p.keyID), lockRank(y.p.keyID)) })
	if len(plan) == 0 {
		return nil
	}
	grants, err := m.reserve(ctx, a, plan)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		for i, r := range plan {
			r.p.lease = grants[i]
		}
		return nil
	case err == ErrInsufficientCredits || err == ErrKeyLimitExceeded || err == ErrUnknownKey:
		return nil // nothing to top up with: the next request is refused or tops up itself
	case errors.Is(err, errLeaseMismatch):
		a.resync = true
		return nil
	}
	a.resync = true // the commit may have happened: read back before the next write
	return err
}

// lockRank orders a write's leases as rows are locked: keys by id, then
// the balance.
func lockRank(keyID int64) int64 {
	if keyID == 0 {
		return math.MaxInt64
	}
	return keyID
}

func (a *meterAccount) pools() []*budget {
	ps := make([]*budget, 0, 1+len(a.keys))
	ps = append(ps, a.balance)
	for _, p := range a.keys {
		ps = append(ps, p)
	}
	return ps
}

func (m *Meter) needsSyncLocked(a *meterAccount, now time.Time, force bool) bool {
	if len(a.queue) > 0 || len(a.pending) > 0 || a.resync {
		return true
	}
	for _, p := range a.pools() {
		if p.hasRow && (p.returnable(now, 0, force) || now.Sub(a.renewed) >= m.ttl()/3) {
			return true
		}
	}
	return false
}

// returnable tells whether p has nothing in flight and nothing to write
// beyond spent, and has been unused for leaseIdleAfter (or force).
func (p *budget) returnable(now time.Time, spent money.USD, force bool) bool {
	return p.hasRow && !p.busy && p.inflight == 0 && p.spent == spent && p.waiting == 0 &&
		(force || now.Sub(p.lastUse) >= leaseIdleAfter)
}

func (a *meterAccount) emptyLocked() bool {
	if len(a.queue) > 0 || len(a.pending) > 0 || a.resync || len(a.tickets) > 0 {
		return false
	}
	for _, p := range a.pools() {
		if p.hasRow || p.committed() != 0 || p.waiting != 0 {
			return false
		}
	}
	return true
}

// syncEach writes the accounts, a few at a time; each was counted in users.
func (m *Meter) syncEach(parent context.Context, accounts []*meterAccount, force bool) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, meterWorkers)
	)
	for _, a := range accounts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(parent, meterWriteTimeout)
			defer cancel()
			err := m.sync(ctx, a, force)
			m.mu.Lock()
			a.users--
			m.mu.Unlock()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Flush writes every queued usage entry now (tests; Close).
func (m *Meter) Flush(ctx context.Context) error {
	return m.syncAll(ctx, false)
}

func (m *Meter) syncAll(ctx context.Context, force bool) error {
	now := time.Now()
	m.mu.Lock()
	var todo []*meterAccount
	for _, a := range m.accounts {
		if m.needsSyncLocked(a, now, force) {
			a.users++
			todo = append(todo, a)
		}
	}
	m.mu.Unlock()
	return m.syncEach(ctx, todo, force)
}

// Tracks says whether the meter still keeps anything of the account: a
// lease, a request in flight, usage to write. Once it does not, nothing
// more is written for the account until its next request.
func (m *Meter) Tracks(userID int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.accounts[userID]
	return ok
}

// Close writes everything queued and returns every lease with nothing in
// flight; call it once the HTTP server has drained. Requests admitted after
// it are refused; a request still in flight is written when it finishes.
func (m *Meter) Close(ctx context.Context) error {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	started := m.started
	m.mu.Unlock()
	if started && first {
		close(m.stop)
		select {
		case <-m.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return m.syncAll(ctx, true)
}

// resyncIfNeeded reads the account's leases back after a failed write, and
// learns whether the batch that was being written was committed.
// The caller holds a.write.
func (m *Meter) resyncIfNeeded(ctx context.Context, a *meterAccount) error {
	m.mu.Lock()
	need, pending := a.resync, a.pending
	m.mu.Unlock()
	if !need {
		return nil
	}
	var rows []leaseRow
	if err := m.s.db.SelectContext(ctx, &rows, `SELECT key_id, amount FROM leases WHERE replica = $1 AND user_id = $2`,
		m.replica, a.userID); err != nil {
		return err
	}
	written := false
	if len(pending) > 0 { // a batch is one transaction: its first entry tells
		if err := m.s.db.GetContext(ctx, &written, `
			SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE user_id = $1 AND generation_id = $2)`,
			a.userID, pending[0].u.GenerationID); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range a.pools() {
		if p.hasRow && !slices.ContainsFunc(rows, func(r leaseRow) bool { return r.KeyID == p.keyID }) {
			m.log().Warn("a lease of this replica was released by a sweep: it stalled past the lease's expiry",
				"user_id", a.userID, "key_id", p.keyID, "amount", p.lease.String())
		}
		p.lease, p.hasRow = 0, false
	}
	for _, r := range rows {
		p := a.balance
		if r.KeyID != 0 {
			p = a.keyPool(r.KeyID)
		}
		p.lease, p.hasRow = r.Amount, true
	}
	if written {
		for _, c := range pending {
			a.balance.spent -= c.u.Cost
			if c.key != nil {
				c.key.spent -= c.u.Cost
			}
		}
		a.pending = nil
	}
	a.resync = false
	return nil
}

// leaseWrite is what one write does to one lease.
type leaseWrite struct {
	p       *budget
	was     money.USD
	spent   money.USD // written as usage
	release money.USD // moved from held to usage: the lease shrinks by it
	ret     bool      // the rest is returned and the row deleted
}

// freed is what the write takes off the held of the balance or key.
func (w leaseWrite) freed() money.USD {
	if w.ret {
		return w.was
	}
	return w.release
}

// meterPlan is one account's write.
type meterPlan struct {
	batch   []meterCharge
	pools   []leaseWrite
	now     time.Time // the store's clock: key windows, expiry
	expires time.Time
}

// sync writes the account's queued usage, returns its idle leases (all
// with nothing in flight when force) and renews the rest, in one
// transaction.
func (m *Meter) sync(ctx context.Context, a *meterAccount, force bool) error {
	a.write.Lock()
	defer a.write.Unlock()
	for attempt := 0; ; attempt++ {
		err := m.syncOnce(ctx, a, force)
		m.mu.Lock()
		more := len(a.queue) > 0 // queued behind a batch written again
		m.mu.Unlock()
		switch {
		case attempt == 2:
			return err
		case errors.Is(err, errLeaseMismatch): // read the leases back and write again, at once
		case err != nil || !more:
			return err
		}
	}
}

// syncOnce is one attempt of sync; the caller holds a.write.
func (m *Meter) syncOnce(ctx context.Context, a *meterAccount, force bool) error {
	if err := m.resyncIfNeeded(ctx, a); err != nil {
		return m.failed(a, err)
	}
	m.mu.Lock()
	plan := m.planSyncLocked(a, force)
	m.mu.Unlock()
	if plan == nil {
		return nil
	}
	err := m.writeSync(ctx, a, plan)
	m.mu.Lock()
	for _, w := range plan.pools {
		w.p.busy = false
	}
	if errors.Is(err, errAccountGone) {
		// Nothing is left to charge or return: forget what was written
		// for it. Requests still in flight are dropped the same way.
		a.pending, a.resync = nil, false
		for _, p := range a.pools() {
			p.lease, p.hasRow, p.spent = 0, false, 0
		}
		m.mu.Unlock()
		m.log().Info("metered usage of a deleted account dropped", "user_id", a.userID)
		return nil
	}
	if err != nil {
		a.resync = true // the commit may have happened: read back before the next write
		m.mu.Unlock()
		return m.failed(a, err)
	}
	defer m.mu.Unlock()
	for _, w := range plan.pools {
		w.p.spent -= w.spent
		w.p.lease -= w.release
		if w.ret {
			w.p.lease, w.p.hasRow = 0, false
		}
	}
	for id, p := range a.keys {
		if !p.hasRow && p.committed() == 0 && p.waiting == 0 && !p.busy && !a.hasTicketOn(p) {
			delete(a.keys, id)
		}
	}
	a.pending = nil
	a.renewed = time.Now()
	if a.failing {
		a.failing = false
		m.log().Info("metered usage written after retrying", "user_id", a.userID)
	}
	return nil
}

func (a *meterAccount) hasRow() bool {
	return slices.ContainsFunc(a.pools(), func(p *budget) bool { return p.hasRow })
}

func (a *meterAccount) hasTicketOn(p *budget) bool {
	for t := range a.tickets {
		if t.key == p {
			return true
		}
	}
	return false
}

// failed logs the first failure of a run of them; the write is retried.
func (m *Meter) failed(a *meterAccount, err error) error {
	if errors.Is(err, errLeaseMismatch) { // read back and written again at once
		return err
	}
	m.mu.Lock()
	first := !a.failing
	a.failing = true
	m.mu.Unlock()
	if first {
		m.log().Warn("write metered usage; retrying", "user_id", a.userID, "error", err)
	}
	return err
}

func (m *Meter) planSyncLocked(a *meterAccount, force bool) *meterPlan {
	now := time.Now()
	batch := a.pending
	if len(batch) == 0 {
		batch, a.queue = a.queue, nil
	}
	a.pending = batch // kept until written, so that a failure can tell
	spent := map[*budget]money.USD{}
	for _, c := range batch {
		spent[a.balance] += c.u.Cost
		if c.key != nil {
			spent[c.key] += c.u.Cost
		}
	}
	// Renewing writes every row, even untouched ones, with the new expiry.
	renew := now.Sub(a.renewed) >= m.ttl()/3 && a.hasRow()
	if len(batch) == 0 && !renew && !slices.ContainsFunc(a.pools(), func(p *budget) bool { return p.returnable(now, 0, force) }) {
		a.pending = nil
		return nil
	}
	plan := &meterPlan{batch: batch, now: m.s.now()}
	plan.expires = plan.now.Add(m.ttl())
	for _, p := range a.pools() {
		w := leaseWrite{p: p, was: p.lease, spent: spent[p]}
		if p.hasRow {
			// What in-flight requests hold stays reserved.
			w.release = min(w.spent, max(0, p.lease-p.inflight))
			w.ret = p.returnable(now, w.spent, force)
		}
		if w.spent == 0 && !w.ret && !(renew && p.hasRow) {
			continue
		}
		p.busy = p.busy || w.ret // admit nothing from a lease being returned
		plan.pools = append(plan.pools, w)
	}
	slices.SortFunc(plan.pools, func(x, y leaseWrite) int { return cmp.Compare(x.p.keyID, y.p.keyID) })
	return plan
}

// keyUsageWrite is what one write does to one key: its usage, and what its
// lease frees of its held.
type keyUsageWrite struct {
	keyID int64
	costs []int64
	ats   []string
	freed money.USD
}

const pgTimeFormat = "2006-01-02T15:04:05.999999Z07:00"

func (m *Meter) writeSync(ctx context.Context, a *meterAccount, plan *meterPlan) error {
	var (
		updKeys, updWas, updRelease []int64
		delKeys, delWas             []int64
		balanceFreed, total         money.USD
		keys                        = map[int64]*keyUsageWrite{}
	)
	keyOf := func(id int64) *keyUsageWrite {
		k := keys[id]
		if k == nil {
			k = &keyUsageWrite{keyID: id}
			keys[id] = k
		}
		return k
	}
	for _, w := range plan.pools {
		if w.p.hasRow {
			if w.ret {
				delKeys, delWas = append(delKeys, w.p.keyID), append(delWas, int64(w.was))
			} else {
				updKeys, updWas, updRelease = append(updKeys, w.p.keyID), append(updWas, int64(w.was)), append(updRelease, int64(w.release))
			}
		}
		if w.p.keyID == 0 {
			balanceFreed = w.freed()
		} else if w.freed() != 0 {
			keyOf(w.p.keyID).freed = w.freed()
		}
	}
	for _, c := range plan.batch {
		total += c.u.Cost
		k := keyOf(c.keyID)
		k.costs = append(k.costs, int64(c.u.Cost))
		k.ats = append(k.ats, c.at.UTC().Format(pgTimeFormat))
	}
	keyWrites := make([]*keyUsageWrite, 0, len(keys))
	for _, k := range keys {
		keyWrites = append(keyWrites, k)
	}
	slices.SortFunc(keyWrites, func(x, y *keyUsageWrite) int { return cmp.Compare(x.keyID, y.keyID) })

	return m.s.withTx(ctx, func(tx *sqlx.Tx) error {
		// The lease rows first, as this replica left them, or nothing.
		if len(updKeys) > 0 {
			res, err := tx.ExecContext(ctx, `
				UPDATE leases l SET amount = l.amount - v.release, expires_at = $3
				FROM unnest($4::bigint[], $5::bigint[], $6::bigint[]) AS v(key_id, was, release)
				WHERE l.replica = $1 AND l.user_id = $2 AND l.key_id = v.key_id AND l.amount = v.was`,
				m.replica, a.userID, plan.expires, pq.Array(updKeys), pq.Array(updWas), pq.Array(updRelease))
			if err := wantLeaseRows(res, err, len(updKeys)); err != nil {
				return err
			}
		}
		if len(delKeys) > 0 {
			res, err := tx.ExecContext(ctx, `
				DELETE FROM leases l USING unnest($3::bigint[], $4::bigint[]) AS v(key_id, was)
				WHERE l.replica = $1 AND l.user_id = $2 AND l.key_id = v.key_id AND l.amount = v.was`,
				m.replica, a.userID, pq.Array(delKeys), pq.Array(delWas))
			if err := wantLeaseRows(res, err, len(delKeys)); err != nil {
				return err
			}
		}
		// Keys by id: their usage in the current window, and what their
		// leases free. A deleted key updates nothing: usage outlives it.
		for _, k := range keyWrites {
			if _, err := tx.ExecContext(ctx, `
				UPDATE api_keys SET
					window_usage = CASE WHEN window_start = key_window_start(limit_reset, $3::timestamptz) THEN window_usage ELSE 0 END
						+ (SELECT coalesce(sum(c.cost), 0) FROM unnest($4::bigint[], $5::timestamptz[]) AS c(cost, at)
						   WHERE key_window_start(limit_reset, c.at) = key_window_start(limit_reset, $3::timestamptz)),
					window_start = key_window_start(limit_reset, $3::timestamptz),
					held = held - $6::bigint
				WHERE id = $1 AND user_id = $2`,
				k.keyID, a.userID, plan.now, pq.Array(k.costs), pq.Array(k.ats), int64(k.freed)); err != nil {
				return err
			}
		}
		if len(plan.batch) == 0 && balanceFreed == 0 {
			return nil
		}
		var after money.USD
		err := tx.GetContext(ctx, &after, `
			UPDATE balances SET usage = usage + $2, held = held - $3 WHERE user_id = $1 RETURNING credits - usage`,
			a.userID, total, balanceFreed)
		if isNoRows(err) {
			return errAccountGone
		}
		if err != nil {
			return err
		}
		if len(plan.batch) == 0 {
			return nil
		}
		return insertUsageEntries(ctx, tx, a.userID, plan.batch, after)
	})
}

// wantLeaseRows fails with errLeaseMismatch unless the statement changed n rows.
func wantLeaseRows(res interface{ RowsAffected() (int64, error) }, err error, n int) error {
	if err != nil {
		return err
	}
	got, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if got != int64(n) {
		return errLeaseMismatch
	}
	return nil
}

// insertUsageEntries writes the batch as usage entries in order, each with
// the balance right after it (the last one's is after), and adds them to
// usage_hourly. The caller holds the account's balances row, so no other
// entry of the account comes between them.
func insertUsageEntries(ctx context.Context, tx *sqlx.Tx, userID int64, batch []meterCharge, after money.USD) error {
	// One array per column, for unnest.
	var e struct {
		cost, balanceAfter, keyID, input, output, latency []int64
		at, model, gen, status, finish                    []string
		estimated, streamed                               []bool
	}
	type hour struct {
		start time.Time
		keyID int64
		model string
	}
	type sums struct{ requests, input, output, cost int64 }
	hours := map[hour]*sums{}
	running := after + sumCosts(batch) // the balance before the batch
	for _, c := range batch {
		running -= c.u.Cost
		e.cost, e.balanceAfter, e.keyID = append(e.cost, int64(c.u.Cost)), append(e.balanceAfter, int64(running)), append(e.keyID, c.keyID)
		e.input, e.output = append(e.input, c.u.InputTokens), append(e.output, c.u.OutputTokens)
		e.latency, e.at = append(e.latency, c.u.Latency.Milliseconds()), append(e.at, c.at.UTC().Format(pgTimeFormat))
		e.model, e.gen = append(e.model, c.u.Model), append(e.gen, c.u.GenerationID)
		e.status, e.finish = append(e.status, c.u.Status), append(e.finish, c.u.FinishReason)
		e.estimated, e.streamed = append(e.estimated, c.u.Estimated), append(e.streamed, c.u.Streamed)
		h := hour{c.at.UTC().Truncate(time.Hour), c.keyID, c.u.Model}
		if hours[h] == nil {
			hours[h] = &sums{}
		}
		hs := hours[h]
		hs.requests++
		hs.input += c.u.InputTokens
		hs.output += c.u.OutputTokens
		hs.cost += int64(c.u.Cost)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO ledger_entries (user_id, type, amount, balance_after, description, created_at,
			key_id, model, generation_id, input_tokens, output_tokens, estimated, streamed, status, finish_reason, latency_ms)
		SELECT $1, 'usage', -e.cost, e.balance_after, e.model, e.at, e.key_id, e.model, e.gen, e.input, e.output,
			e.estimated, e.streamed, e.status, e.finish, e.latency
		FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[], $6::bigint[], $7::text[], $8::bigint[],
			$9::bigint[], $10::boolean[], $11::boolean[], $12::text[], $13::text[], $14::bigint[])
			WITH ORDINALITY AS e(cost, balance_after, model, at, key_id, gen, input, output,
				estimated, streamed, status, finish, latency, ord)
		ORDER BY e.ord`,
		userID, pq.Array(e.cost), pq.Array(e.balanceAfter), pq.Array(e.model), pq.Array(e.at), pq.Array(e.keyID),
		pq.Array(e.gen), pq.Array(e.input), pq.Array(e.output), pq.Array(e.estimated), pq.Array(e.streamed),
		pq.Array(e.status), pq.Array(e.finish), pq.Array(e.latency)); err != nil {
		return err
	}
	// Sorted, so that two writers of one account's hours lock them in one
	// order (they take turns on the balances row anyway).
	keys := make([]hour, 0, len(hours))
	for h := range hours {
		keys = append(keys, h)
	}
	slices.SortFunc(keys, func(x, y hour) int {
		return cmp.Or(x.start.Compare(y.start), cmp.Compare(x.keyID, y.keyID), cmp.Compare(x.model, y.model))
	})
	var u struct {
		start, model                         []string
		keyID, requests, input, output, cost []int64
	}
	for _, h := range keys {
		hs := hours[h]
		u.start, u.keyID, u.model = append(u.start, h.start.Format(pgTimeFormat)), append(u.keyID, h.keyID), append(u.model, h.model)
		u.requests, u.input = append(u.requests, hs.requests), append(u.input, hs.input)
		u.output, u.cost = append(u.output, hs.output), append(u.cost, hs.cost)
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO usage_hourly AS h (user_id, hour, key_id, model, requests, input_tokens, output_tokens, cost)
		SELECT $1, u.hour, u.key_id, u.model, u.requests, u.input, u.output, u.cost
		FROM unnest($2::timestamptz[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
			AS u(hour, key_id, model, requests, input, output, cost)
		ON CONFLICT (user_id, hour, key_id, model) DO UPDATE SET
			requests = h.requests + EXCLUDED.requests, input_tokens = h.input_tokens + EXCLUDED.input_tokens,
			output_tokens = h.output_tokens + EXCLUDED.output_tokens, cost = h.cost + EXCLUDED.cost`,
		userID, pq.Array(u.start), pq.Array(u.keyID), pq.Array(u.model), pq.Array(u.requests), pq.Array(u.input),
		pq.Array(u.output), pq.Array(u.cost))
	return err
}

func sumCosts(batch []meterCharge) money.USD {
	var total money.USD
	for _, c := range batch {
		total += c.u.Cost
	}
	return total
}

// releaseExpiredLeases releases the leases past their expiry, left by
// replicas that stopped without returning them, and returns how many.
func (s *Store) releaseExpiredLeases(ctx context.Context) (int, error) {
	var expired []struct {
		Replica string `db:"replica"`
		UserID  int64  `db:"user_id"`
		KeyID   int64  `db:"key_id"`
	}
	now := s.now()
	if err := s.db.SelectContext(ctx, &expired, `
		SELECT replica, user_id, key_id FROM leases WHERE expires_at <= $1 ORDER BY expires_at LIMIT 1000`, now); err != nil {
		return 0, err
	}
	n := 0
	for _, l := range expired {
		// One statement: the lease row first, as its owner locks it (a
		// lease renewed meanwhile is no longer expired and stays), then
		// what it held comes off the balance or the key, in SQL.
		var released int
		err := s.db.GetContext(ctx, &released, `
			WITH gone AS (
				DELETE FROM leases WHERE replica = $1 AND user_id = $2 AND key_id = $3 AND expires_at <= $4
				RETURNING user_id, key_id, amount
			), balance AS (
				UPDATE balances b SET held = b.held - g.amount FROM gone g
				WHERE g.key_id = 0 AND b.user_id = g.user_id
			), key AS (
				UPDATE api_keys k SET held = k.held - g.amount FROM gone g
				WHERE g.key_id <> 0 AND k.id = g.key_id AND k.user_id = g.user_id
			)
			SELECT count(*) FROM gone`,
			l.Replica, l.UserID, l.KeyID, now)
		if err != nil {
			return n, err
		}
		n += released
	}
	return n, nil
}
