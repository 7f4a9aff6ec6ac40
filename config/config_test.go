package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadRefusesUnsafeOrMalformedSettings(t *testing.T) {
	prod := map[string]string{"APP_ENV": "production", "SECRET_KEY": strings.Repeat("s", 32), "DATABASE_URL": "postgres://db/x"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range prod {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		env  map[string]string
		want string // part of the error; "" for none
	}{
		{prod, ""},
		{with(map[string]string{"SMTP_URL": "smtp://mail.example:587?from=a@example.com"}), "needs PUBLIC_URL"},
		{with(map[string]string{"SMTP_URL": "smtp://mail.example:587?from=a@example.com", "PUBLIC_URL": "https://ms.example/"}), ""},
		{with(map[string]string{"PUBLIC_URL": "ms.example"}), "PUBLIC_URL must be"},
		{with(map[string]string{"LEASE_TTL": "0s"}), "LEASE_TTL must be a positive duration"},
		{with(map[string]string{"MAX_KEYS_PER_ACCOUNT": "0"}), "MAX_KEYS_PER_ACCOUNT must be a whole number of at least 1"},
		{with(map[string]string{"SECRET_KEY": "short"}), "at least 32 bytes"},
		{map[string]string{"APP_ENV": "staging"}, "APP_ENV must be"},
		{with(map[string]string{"TRUSTED_PROXIES": "10.0.0.1", "MAX_CONNS_PER_IP": "64"}), "MAX_CONNS_PER_IP counts connections per TCP peer"},
		{with(map[string]string{"TRUSTED_PROXIES": "10.0.0.1", "MAX_CONNS_PER_IP": "0"}), ""},
	} {
		_, err := Load(env(c.env))
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%v: error %v, want %q", c.env, err, c.want)
		}
	}
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(env(map[string]string{"APP_ENV": "production", "SECRET_KEY": strings.Repeat("s", 32),
		"DATABASE_URL": "postgres://db/x", "PUBLIC_URL": "https://ms.example/", "TRUSTED_PROXIES": "10.0.0.0/8"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LeaseTTL != 30*time.Second || cfg.PublicURL != "https://ms.example" || cfg.MaxConnsPerIP != 0 ||
		cfg.MaxKeysPerAccount != 1000 || cfg.KeyWritesPerMinute != 60 || cfg.SignupCredits != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
}
