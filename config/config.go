// Package config reads the server's settings from the environment, once, at
// start: main and every part that needs a setting get it from here.
package config

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"modelswitch/db/money"
)

// Config is everything the server reads from its environment.
type Config struct {
	Port        string
	DatabaseURL string // empty: start the embedded development database
	// DatabaseListenURL reaches PostgreSQL directly for LISTEN, when
	// DatabaseURL goes through a pooler in transaction mode; empty: DatabaseURL.
	DatabaseListenURL string
	Secret            []byte
	Production        bool
	TrustedProxies    []netip.Prefix // proxies whose X-Forwarded-For is believed
	DataDir           string         // development state: embedded database, secret

	SignupCredits money.USD // granted to each new account
	ModelsFile    string    // the model catalog; empty: only modelswitch/echo
	// Upstream timeouts: connecting, waiting for the first byte of an
	// answer, and waiting between bytes of a streamed answer.
	UpstreamConnect, UpstreamFirstByte, UpstreamIdle time.Duration

	// The database: how many connections, how long one statement may run,
	// how long a request waits for a free connection, and how long the
	// server keeps trying to reach PostgreSQL when it starts.
	DatabaseMaxConns                                      int
	StatementTimeout, DatabasePoolWait, DatabaseStartWait time.Duration

	// Abuse limits: open connections per client address (0: none, the
	// default behind trusted proxies, where every connection comes from
	// one), keys of each kind per account, and key writes per minute per
	// billing key or dashboard session.
	MaxConnsPerIP, MaxKeysPerAccount, KeyWritesPerMinute int
	// SignupsPerHour is how many accounts one client address may create.
	SignupsPerHour int

	// ShutdownTimeout is how long a stopping server waits for requests in
	// flight; streams still running then are cut and charged for what
	// they sent.
	ShutdownTimeout time.Duration

	// LeaseTTL is how long the credit a replica has leased from an account
	// stays held after the replica's last word: a crashed replica's leases
	// return to the account this long after it stopped.
	LeaseTTL time.Duration

	// SMTPURL sends password reset mail (smtp://user:pass@host:587?from=…);
	// empty: development writes each mail to the log, production sends none.
	SMTPURL string
	// PublicURL is the base of links in mail, like https://modelswitch.example;
	// empty: the request's Host.
	PublicURL string
}

// Load reads the environment. getenv is os.Getenv outside tests.
func Load(getenv func(string) string) (Config, error) {
	cfg := Config{
		Port:              getenv("PORT"),
		DatabaseURL:       getenv("DATABASE_URL"),
		DatabaseListenURL: getenv("DATABASE_LISTEN_URL"),
		SMTPURL:           getenv("SMTP_URL"),
		PublicURL:         strings.TrimSuffix(getenv("PUBLIC_URL"), "/"),
		DataDir:           ".data",
	}
	if cfg.Port == "" {
		cfg.Port = "3000"
	}
	switch env := getenv("APP_ENV"); env {
	case "", "development":
	case "production":
		cfg.Production = true
	default:
		return Config{}, fmt.Errorf("APP_ENV must be development or production, not %q", env)
	}
	for _, p := range strings.Split(getenv("TRUSTED_PROXIES"), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return Config{}, fmt.Errorf("TRUSTED_PROXIES: %q is neither an address nor a CIDR range", p)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, prefix.Masked())
	}
	secret := getenv("SECRET_KEY")
	switch {
	case secret != "" && len(secret) < 32:
		return Config{}, errors.New("SECRET_KEY must be at least 32 bytes")
	case secret != "":
		cfg.Secret = []byte(secret)
	case cfg.Production:
		return Config{}, errors.New("APP_ENV=production needs SECRET_KEY (at least 32 bytes)")
	default:
		s, err := developmentSecret(cfg.DataDir)
		if err != nil {
			return Config{}, err
		}
		cfg.Secret = s
	}
	cfg.SignupCredits = 5 * money.Dollar
	if cfg.Production {
		cfg.SignupCredits = 0
	}
	if raw := getenv("SIGNUP_CREDITS"); raw != "" {
		v, err := money.Parse(raw)
		if err != nil || v < 0 {
			return Config{}, fmt.Errorf("SIGNUP_CREDITS must be an amount of US dollars of 0 or more, like 5 or 2.50, not %q", raw)
		}
		cfg.SignupCredits = v
	}
	cfg.ModelsFile = getenv("MODELS_FILE")
	for _, d := range []struct {
		name string
		dst  *time.Duration
		def  time.Duration
	}{
		{"UPSTREAM_CONNECT_TIMEOUT", &cfg.UpstreamConnect, 5 * time.Second},
		{"UPSTREAM_FIRST_BYTE_TIMEOUT", &cfg.UpstreamFirstByte, 60 * time.Second},
		{"UPSTREAM_IDLE_TIMEOUT", &cfg.UpstreamIdle, 60 * time.Second},
		{"DATABASE_STATEMENT_TIMEOUT", &cfg.StatementTimeout, 5 * time.Second},
		{"DATABASE_POOL_WAIT", &cfg.DatabasePoolWait, time.Second},
		{"DATABASE_START_WAIT", &cfg.DatabaseStartWait, time.Minute},
		{"LEASE_TTL", &cfg.LeaseTTL, 30 * time.Second},
		{"SHUTDOWN_TIMEOUT", &cfg.ShutdownTimeout, 30 * time.Second},
	} {
		if err := duration(getenv, d.name, d.dst, d.def); err != nil {
			return Config{}, err
		}
	}
	defaultConnsPerIP := 64
	if len(cfg.TrustedProxies) > 0 {
		defaultConnsPerIP = 0
	}
	for _, n := range []struct {
		name     string
		dst      *int
		def, min int
	}{
		{"DATABASE_MAX_CONNS", &cfg.DatabaseMaxConns, 20, 4},
		{"MAX_CONNS_PER_IP", &cfg.MaxConnsPerIP, defaultConnsPerIP, 0},
		{"MAX_KEYS_PER_ACCOUNT", &cfg.MaxKeysPerAccount, 1000, 1},
		{"KEY_WRITES_PER_MINUTE", &cfg.KeyWritesPerMinute, 60, 1},
		{"SIGNUPS_PER_HOUR", &cfg.SignupsPerHour, 10, 1},
	} {
		*n.dst = n.def
		if raw := getenv(n.name); raw != "" {
			v, err := strconv.Atoi(raw)
			if err != nil || v < n.min {
				return Config{}, fmt.Errorf("%s must be a whole number of at least %d, not %q", n.name, n.min, raw)
			}
			*n.dst = v
		}
	}
	if len(cfg.TrustedProxies) > 0 && cfg.MaxConnsPerIP > 0 {
		// The cap counts TCP peers: behind a proxy it would cap the proxy.
		return Config{}, errors.New("MAX_CONNS_PER_IP counts connections per TCP peer, which behind TRUSTED_PROXIES is the proxy: leave it unset (or 0) and cap connections per client at the proxy")
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return Config{}, fmt.Errorf("PUBLIC_URL must be an http(s) address like https://modelswitch.example, not %q", cfg.PublicURL)
		}
	}
	if cfg.Production && cfg.SMTPURL != "" && cfg.PublicURL == "" {
		// Links would be built from the request's Host header, which a
		// client chooses: a reset mail could point at anyone's site.
		return Config{}, errors.New("APP_ENV=production with SMTP_URL needs PUBLIC_URL, the base of links in mail, like https://modelswitch.example")
	}
	if cfg.Production && cfg.DatabaseURL == "" {
		return Config{}, errors.New("APP_ENV=production needs DATABASE_URL")
	}
	return cfg, nil
}

// duration reads a positive duration like 30s, or def when unset.
func duration(getenv func(string) string, name string, dst *time.Duration, def time.Duration) error {
	*dst = def
	if raw := getenv(name); raw != "" {
		v, err := time.ParseDuration(raw)
		if err != nil || v <= 0 {
			return fmt.Errorf("%s must be a positive duration like 30s, not %q", name, raw)
		}
		*dst = v
	}
	return nil
}

// developmentSecret is generated once and kept in the data directory, so
// that sessions survive a restart of `make run`.
func developmentSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, "secret_key")
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return nil, err
	}
	return secret, nil
}

// Derive gives each use of SECRET_KEY its own key, so that a session cookie
// key can never verify a JWT and the other way round.
func (c Config) Derive(purpose string) []byte {
	m := hmac.New(sha256.New, c.Secret)
	m.Write([]byte("modelswitch/" + purpose))
	return m.Sum(nil)
}
