package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"modelswitch/db/money"
)

// env is a getenv over a fixed set of variables.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadCatalogBuiltIn(t *testing.T) {
	c, err := LoadCatalog("", env(nil), Timeouts{})
	if err != nil {
		t.Fatal(err)
	}
	models := c.Models()
	if len(models) != 1 {
		t.Fatalf("built-in catalog has %d models, want 1", len(models))
	}
	m := models[0]
	if m.ID != "modelswitch/echo" || m.OwnedBy != "modelswitch" || m.UpstreamModel != "echo" ||
		m.InputPrice != money.PerMillion(money.Dollar) || m.OutputPrice != money.PerMillion(2*money.Dollar) ||
		m.MaxOutputTokens != 4096 || m.Created != 0 {
		t.Errorf("echo model = %+v", m)
	}
	if _, ok := m.Provider.(echo); !ok {
		t.Errorf("echo provider is %T", m.Provider)
	}
}

func TestLoadCatalog(t *testing.T) {
	path := writeFile(t, "models.yaml", `
models:
  - id: openai/gpt-4o-mini
    provider: openai
    base_url: https://api.openai.com/v1/
    api_key_env: OPENAI_API_KEY
    input_price: 0.0375
    output_price: "0.60"
    max_output_tokens: 16384
    created: 1721260800
  - id: openai/gpt-4o
    provider: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    upstream_model: gpt-4o-2024-08-06
    input_price: 2.5
    output_price: 10
  - id: local/llama/3.1-8b
    provider: openai
    base_url: http://localhost:11434/v1
    input_price: 0
    output_price: 0.000000001
  - id: modelswitch/echo
    provider: echo
    input_price: 1
    output_price: 2
`)
	c, err := LoadCatalog(path, env(map[string]string{"OPENAI_API_KEY": "sk-secret"}), Timeouts{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range c.Models() {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, " "); got != "openai/gpt-4o-mini openai/gpt-4o local/llama/3.1-8b modelswitch/echo" {
		t.Errorf("models in order %q", got)
	}

	mini, ok := c.Lookup("openai/gpt-4o-mini")
	if !ok {
		t.Fatal("openai/gpt-4o-mini not found")
	}
	if mini.InputPrice != 37_500_000 || mini.OutputPrice != 600_000_000 {
		t.Errorf("prices %d, %d nano-dollars per million; want exactly 37500000 and 600000000", mini.InputPrice, mini.OutputPrice)
	}
	if mini.UpstreamModel != "gpt-4o-mini" || mini.OwnedBy != "openai" || mini.MaxOutputTokens != 16384 || mini.Created != 1721260800 {
		t.Errorf("gpt-4o-mini = %+v", mini)
	}
	full, _ := c.Lookup("openai/gpt-4o")
	if full.UpstreamModel != "gpt-4o-2024-08-06" || full.MaxOutputTokens != DefaultMaxOutputTokens {
		t.Errorf("gpt-4o = %+v", full)
	}
	if full.Provider != mini.Provider {
		t.Error("two models of one upstream and key have two providers: they would not share connections")
	}
	if p := mini.Provider.(*openAI); p.baseURL != "https://api.openai.com/v1" || p.apiKey != "sk-secret" {
		t.Errorf("provider base %q, key %q", p.baseURL, p.apiKey)
	}
	llama, _ := c.Lookup("local/llama/3.1-8b")
	if llama.UpstreamModel != "llama/3.1-8b" || llama.OutputPrice != 1 || llama.Provider.(*openAI).apiKey != "" {
		t.Errorf("local model = %+v", llama)
	}
	if _, ok := c.Lookup("OpenAI/gpt-4o-mini"); ok {
		t.Error("lookup ignores case; ids are exact")
	}
}

func TestLoadCatalogJSON(t *testing.T) {
	path := writeFile(t, "models.json", `{"models": [{"id": "modelswitch/echo", "provider": "echo", "input_price": 0.0375, "output_price": 2}]}`)
	c, err := LoadCatalog(path, env(nil), Timeouts{})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := c.Lookup("modelswitch/echo"); m == nil || m.InputPrice != 37_500_000 {
		t.Errorf("echo from JSON = %+v", m)
	}
}

func TestLoadCatalogErrors(t *testing.T) {
	const echoEntry = "  - id: modelswitch/echo\n    provider: echo\n    input_price: 1\n    output_price: 2\n"
	tests := []struct {
		name, file string
		want       []string // every one is in the error
	}{
		{"empty file", "", []string{"models: the file is empty"}},
		{"not a mapping", "- a\n- b\n", []string{`the file must be a mapping with a "models" list`}},
		{"no models", "models: []\n", []string{"models: list at least one model"}},
		{"models not a list", "models: {}\n", []string{"models: required: a list of models"}},
		{"unknown top-level field", "model:\n" + echoEntry, []string{"model: unknown field"}},
		{"entry not a mapping", "models:\n  - openai/gpt-4o\n", []string{"models[0]: must be a mapping"}},
		{"unknown field", "models:\n" + echoEntry + "    temperature: 1\n",
			[]string{"models[0] (modelswitch/echo): temperature: unknown field"}},
		{"field twice", "models:\n" + echoEntry + "    input_price: 3\n",
			[]string{"models[0] (modelswitch/echo): input_price: given twice"}},
		{"duplicate id", "models:\n" + echoEntry + echoEntry,
			[]string{`models[1] (modelswitch/echo): id: "modelswitch/echo" is already the id of models[0]`}},
		{"missing id", "models:\n  - provider: echo\n    input_price: 1\n    output_price: 2\n",
			[]string{"models[0]: id: required"}},
		{"id without owner", "models:\n  - id: gpt-4o\n    provider: echo\n    input_price: 1\n    output_price: 2\n",
			[]string{`models[0] (gpt-4o): id: "gpt-4o" must be owner/name`}},
		{"id with a space", "models:\n  - id: openai/gpt 4o\n    provider: echo\n    input_price: 1\n    output_price: 2\n",
			[]string{`models[0] (openai/gpt 4o): id: "openai/gpt 4o" must be owner/name, without spaces`}},
		{"missing provider", "models:\n  - id: a/b\n    input_price: 1\n    output_price: 2\n",
			[]string{"models[0] (a/b): provider: required"}},
		{"unknown provider", "models:\n  - id: a/b\n    provider: anthropic\n    input_price: 1\n    output_price: 2\n",
			[]string{`models[0] (a/b): provider: "anthropic" is not a provider`}},
		{"openai without base_url", "models:\n  - id: a/b\n    provider: openai\n    input_price: 1\n    output_price: 2\n",
			[]string{"models[0] (a/b): base_url: required for provider openai"}},
		{"relative base_url", "models:\n  - id: a/b\n    provider: openai\n    base_url: api.openai.com/v1\n    input_price: 1\n    output_price: 2\n",
			[]string{`models[0] (a/b): base_url: "api.openai.com/v1" must be an absolute http(s) URL`}},
		{"ftp base_url", "models:\n  - id: a/b\n    provider: openai\n    base_url: ftp://example.com\n    input_price: 1\n    output_price: 2\n",
			[]string{`models[0] (a/b): base_url: "ftp://example.com" must be an absolute http(s) URL`}},
		{"echo with base_url", "models:\n" + echoEntry + "    base_url: https://example.com\n",
			[]string{"models[0] (modelswitch/echo): base_url: echo answers by itself"}},
		{"key variable unset", "models:\n  - id: a/b\n    provider: openai\n    base_url: https://example.com\n    api_key_env: MISSING_KEY\n    input_price: 1\n    output_price: 2\n",
			[]string{"models[0] (a/b): api_key_env: the environment variable MISSING_KEY is not set"}},
		{"price not a number", "models:\n  - id: x/y\n  - id: openai/gpt-4o\n    provider: echo\n    input_price: abc\n    output_price: 2\n",
			[]string{`models[1] (openai/gpt-4o): input_price: "abc" is not a decimal number of dollars`}},
		{"price as exponent", "models:\n" + strings.Replace(echoEntry, "input_price: 1", "input_price: 1e-7", 1),
			[]string{`models[0] (modelswitch/echo): input_price: "1e-7" is not a decimal number of dollars`}},
		{"negative price", "models:\n" + strings.Replace(echoEntry, "output_price: 2", "output_price: -2", 1),
			[]string{`models[0] (modelswitch/echo): output_price: "-2" must be 0 or more`}},
		{"ten decimal places", "models:\n" + strings.Replace(echoEntry, "output_price: 2", "output_price: 0.0000000001", 1),
			[]string{`models[0] (modelswitch/echo): output_price: "0.0000000001" has more than 9 decimal places`}},
		{"missing price", "models:\n  - id: a/b\n    provider: echo\n    input_price: 1\n",
			[]string{"models[0] (a/b): output_price: required"}},
		{"price as a list", "models:\n" + strings.Replace(echoEntry, "input_price: 1", "input_price: [1]", 1),
			[]string{"models[0] (modelswitch/echo): input_price: must be a single value"}},
		{"zero max_output_tokens", "models:\n" + echoEntry + "    max_output_tokens: 0\n",
			[]string{"models[0] (modelswitch/echo): max_output_tokens: 0 must be a whole number above 0"}},
		{"text max_output_tokens", "models:\n" + echoEntry + "    max_output_tokens: many\n",
			[]string{`models[0] (modelswitch/echo): max_output_tokens: "many" is not a whole number`}},
		{"negative created", "models:\n" + echoEntry + "    created: -1\n",
			[]string{"models[0] (modelswitch/echo): created: -1 must be unix seconds"}},
		{"every problem at once", "models:\n  - id: a/b\n    provider: nope\n  - id: c d\n",
			[]string{`models[0] (a/b): provider: "nope"`, "models[0] (a/b): input_price: required",
				"models[1] (c d): id:", "models[1] (c d): provider: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "models.yaml", tt.file)
			_, err := LoadCatalog(path, env(nil), Timeouts{})
			if err == nil {
				t.Fatal("loaded a bad file")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), "MODELS_FILE "+path+": "+want) {
					t.Errorf("error\n%v\ndoes not say\nMODELS_FILE %s: %s", err, path, want)
				}
			}
		})
	}
}

func TestLoadCatalogMissingFile(t *testing.T) {
	_, err := LoadCatalog(filepath.Join(t.TempDir(), "none.yaml"), env(nil), Timeouts{})
	if err == nil || !strings.Contains(err.Error(), "MODELS_FILE") || !strings.Contains(err.Error(), "none.yaml") {
		t.Errorf("error %v does not name MODELS_FILE and the file", err)
	}
}
