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
)

// Config is everything the server reads from its environment.
type Config struct {
	Port           string
	DatabaseURL    string // empty: start the embedded development database
	Secret         []byte
	Production     bool
	TrustedProxies []netip.Prefix // proxies whose X-Forwarded-For is believed
	DataDir        string         // development state: embedded database, secret
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
