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
	"os"
	"path/filepath"
	"strings"
	"time"

	"modelswitch/db/money"
)

// Config is everything the server reads from its environment.
type Config struct {
	Port           string
	DatabaseURL    string // empty: start the embedded development database
	Secret         []byte
	Production     bool
	TrustedProxies []netip.Prefix // proxies whose X-Forwarded-For is believed
	DataDir        string         // development state: embedded database, secret

	SignupCredits money.USD // granted to each new account
	ModelsFile    string    // the model catalog; empty: only modelswitch/echo
	// Upstream timeouts: connecting, waiting for the first byte of an
	// answer, and waiting between bytes of a streamed answer.
	UpstreamConnect, UpstreamFirstByte, UpstreamIdle time.Duration
}

// Load reads the environment. getenv is os.Getenv outside tests.
func Load(getenv func(string) string) (Config, error) {
	cfg := Config{
		Port:        getenv("PORT"),
		DatabaseURL: getenv("DATABASE_URL"),
		DataDir:     ".data",
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
	} {
		*d.dst = d.def
		if raw := getenv(d.name); raw != "" {
			v, err := time.ParseDuration(raw)
			if err != nil || v <= 0 {
				return Config{}, fmt.Errorf("%s must be a positive duration like 30s, not %q", d.name, raw)
			}
			*d.dst = v
		}
	}
	if cfg.Production && cfg.DatabaseURL == "" {
		return Config{}, errors.New("APP_ENV=production needs DATABASE_URL")
	}
	return cfg, nil
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
