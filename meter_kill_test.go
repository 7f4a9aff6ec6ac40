package main

// A replica of the gateway killed outright (SIGKILL) in the middle of a
// load on two replicas: the money stays exact and is never overspent; the
// usage the killed replica had not written yet is lost (free requests, never
// more than its leases); its leases stay held until they expire, and then
// the sweep returns them to the account.

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
)

// leaseTTL is the lease expiry the replicas run with (LEASE_TTL).
const leaseTTL = 2 * time.Second

// chat sends one chat completion and returns its status and generation id.
func (s *server) chat(key string, body []byte) (int, string, error) {
	req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	var sink bytes.Buffer
	if _, err := sink.ReadFrom(res.Body); err != nil {
		return 0, "", err
	}
	return res.StatusCode, res.Header.Get("X-Generation-Id"), nil
}

// ledgerState is one consistent read of an account's money.
type ledgerState struct {
	credits, usage, held     int64
	creditSum, usageSum      int64
	holdsAndLeases, leases   int64
	badAfter, entries, lrows int64
}

func readLedger(t *testing.T, conn *sql.DB, userID int64) ledgerState {
	t.Helper()
	l, err := queryLedger(conn, userID)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// queryLedger is readLedger for a goroutine other than the test's, which
// must not call t.Fatal.
func queryLedger(conn *sql.DB, userID int64) (ledgerState, error) {
	var l ledgerState
	// One statement: one snapshot of every table.
	err := conn.QueryRow(`
		SELECT b.credits, b.usage, b.held,
			(SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE user_id = $1 AND type <> 'usage'),
			(SELECT coalesce(-sum(amount), 0) FROM ledger_entries WHERE user_id = $1 AND type = 'usage'),
			(SELECT coalesce(sum(amount), 0) FROM holds WHERE user_id = $1)
				+ (SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = $1 AND key_id = 0),
			(SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = $1),
			(SELECT count(*) FROM (SELECT balance_after, sum(amount) OVER (ORDER BY id) AS running
				FROM ledger_entries WHERE user_id = $1) e WHERE balance_after <> running),
			(SELECT count(*) FROM ledger_entries WHERE user_id = $1 AND type = 'usage'),
			(SELECT count(*) FROM leases WHERE user_id = $1)
		FROM balances b WHERE b.user_id = $1`, userID).Scan(
		&l.credits, &l.usage, &l.held, &l.creditSum, &l.usageSum, &l.holdsAndLeases, &l.leases, &l.badAfter, &l.entries, &l.lrows)
	return l, err
}

// exact checks the ledger invariant on one snapshot, and that the balance
// was never overspent (every charge here costs less than its hold).
func (l ledgerState) exact() error {
	switch {
	case l.credits != l.creditSum || l.usage != l.usageSum:
		return fmt.Errorf("totals %d credits, %d usage; the entries add up to %d, %d", l.credits, l.usage, l.creditSum, l.usageSum)
	case l.held != l.holdsAndLeases:
		return fmt.Errorf("held %d; the holds and leases add up to %d", l.held, l.holdsAndLeases)
	case l.badAfter != 0:
		return fmt.Errorf("%d entries whose balance_after is not the running sum", l.badAfter)
	case l.credits-l.usage-l.held < 0:
		return fmt.Errorf("overspent: credits %d, usage %d, held %d", l.credits, l.usage, l.held)
	}
	return nil
}

func TestKillReplicaUnderLoad(t *testing.T) {
	env := []string{"SIGNUP_CREDITS=0.3", "LEASE_TTL=" + leaseTTL.String()}
	victim, survivor := startServer(t, env...), startServer(t, env...)
	victim.waitLive(t)
	survivor.waitLive(t)
	acct := victim.account(t)
	conn, err := sql.Open("postgres", pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var userID int64
	if err := conn.QueryRow(`SELECT id FROM users WHERE lower(email) = lower($1)`, acct.email).Scan(&userID); err != nil {
		t.Fatal(err)
	}

	// About 500 tokens in and out: each request holds about $0.0017 and
	// costs about $0.0015, so the $0.30 lasts a couple of hundred requests.
	body, _ := json.Marshal(map[string]any{"model": "modelswitch/echo", "max_tokens": 600,
		"messages": []map[string]string{{"role": "user", "content": strings.Repeat("lorem ipsum dolor sit amet ", 55)}}})

	var (
		mu                sync.Mutex
		answered          = map[*server][]string{} // generation ids answered 200
		bad               []string
		victimOK, refused atomic.Int64
		wg                sync.WaitGroup
		stop              = make(chan struct{})
		killed            atomic.Bool
	)
	for w := range 16 {
		s := victim
		if w%2 == 1 {
			s = survivor
		}
		wg.Go(func() {
			for refusals := 0; refusals < 5; {
				select {
				case <-stop:
					return
				default:
				}
				status, gen, err := s.chat(acct.ms, body)
				mu.Lock()
				switch {
				case err != nil && s == victim && killed.Load():
					mu.Unlock()
					return // its connection died with it
				case err != nil:
					bad = append(bad, err.Error())
				case status == 200:
					answered[s] = append(answered[s], gen)
					if s == victim {
						victimOK.Add(1)
					}
				case status == 402:
					refusals++
					refused.Add(1)
				default:
					bad = append(bad, fmt.Sprintf("status %d", status))
				}
				mu.Unlock()
			}
		})
	}
	// However the test ends, the load stops before the server and the
	// connection go away.
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(func() { halt(); wg.Wait() })
	// The ledger adds up at every moment of the load, and never shows
	// more spent or held than the credits.
	sampled := make(chan error, 1)
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, err := queryLedger(conn, userID)
			if err == nil {
				err = l.exact()
			}
			if err != nil {
				sampled <- err
				return
			}
			time.Sleep(20 * time.Millisecond) // a sample rate, not a wait for a condition
		}
	}()

	waitFor(t, 60*time.Second, "the victim to answer under load", func() bool { return victimOK.Load() >= 30 })
	killed.Store(true)
	if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no flush
		t.Fatal(err)
	}
	<-victim.exited
	atKill := readLedger(t, conn, userID)
	// The survivor spends what is left until it refuses.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the load did not end")
	}
	halt()
	if err := <-sampled; err != nil {
		t.Fatalf("during the load: %v", err)
	}
	if len(bad) > 0 {
		t.Fatalf("%d requests failed, e.g. %s", len(bad), bad[0])
	}

	// Every request the survivor answered is written within a second; of
	// the victim's, only those it had written before it died.
	inLedger := func(gens []string) int {
		var n int
		if err := conn.QueryRow(`SELECT count(*) FROM ledger_entries WHERE user_id = $1 AND generation_id = ANY ($2)`,
			userID, pq.Array(gens)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, 10*time.Second, "the survivor's answers to be written", func() bool {
		return inLedger(answered[survivor]) == len(answered[survivor])
	})
	written := inLedger(answered[victim])

	// The victim's leases expire and are swept; then nothing is held and
	// nothing is leased.
	start := time.Now()
	// LEASE_TTL after its last write, at the survivor's next sweep (every
	// LEASE_TTL/3), with room for a busy machine.
	waitFor(t, 5*leaseTTL+10*time.Second, "the dead replica's leases to be released", func() bool {
		l := readLedger(t, conn, userID)
		return l.held == 0 && l.lrows == 0
	})
	end := readLedger(t, conn, userID)
	if err := end.exact(); err != nil {
		t.Fatal(err)
	}
	if end.usage > end.credits {
		t.Fatalf("spent %d of %d credits", end.usage, end.credits)
	}
	if end.entries != int64(len(answered[survivor])+written) {
		t.Fatalf("%d usage entries; %d answers of the survivor and %d written by the victim", end.entries, len(answered[survivor]), written)
	}
	// What the crash lost is bounded by what was leased when it happened:
	// the victim's unwritten answers were all paid from its leases.
	if lost := int64(len(answered[victim]) - written); lost > 0 && end.entries > 0 {
		if cost := lost * (end.usage / end.entries); cost > atKill.leases {
			t.Fatalf("%d answers lost with the victim cost about %d nano-dollars, more than the %d leased at the kill", lost, cost, atKill.leases)
		}
	}
	// The released money can be spent again.
	if end.credits-end.usage >= 2_000_000 { // more than one request holds
		if status, _, err := survivor.chat(acct.ms, body); err != nil || status != 200 {
			t.Fatalf("after the release, with %d nano-dollars left: %d %v", end.credits-end.usage, status, err)
		}
	}
	t.Logf("victim answered %d (%d written, %d lost with it), survivor %d, %d refusals; at the kill %d nano-dollars were leased; "+
		"released %v after the load; spent %d of %d",
		len(answered[victim]), written, len(answered[victim])-written, len(answered[survivor]), refused.Load(),
		atKill.leases, time.Since(start).Round(10*time.Millisecond), end.usage, end.credits)
}
