package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"modelswitch/db/money"
)

// Timeouts bound the waits on an upstream; zero fields take the defaults.
type Timeouts struct {
	Connect   time.Duration // opening a connection, TLS included: default 5s
	FirstByte time.Duration // from the request sent to the response headers: default 60s
	Idle      time.Duration // between two bytes of a response body: default 60s
}

func (t Timeouts) withDefaults() Timeouts {
	if t.Connect <= 0 {
		t.Connect = 5 * time.Second
	}
	if t.FirstByte <= 0 {
		t.FirstByte = 60 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 60 * time.Second
	}
	return t
}

// DefaultMaxOutputTokens bounds the hold of a request without max_tokens
// when the catalog does not say otherwise.
const DefaultMaxOutputTokens = 4096

// Model is one model the router serves.
type Model struct {
	ID              string // what clients send as "model": "openai/gpt-4o-mini"
	OwnedBy         string // the id before its first "/"
	Created         int64  // unix seconds, shown by /v1/models
	UpstreamModel   string // the name the provider knows the model by
	InputPrice      money.PerMillion
	OutputPrice     money.PerMillion
	MaxOutputTokens int64
	Provider        Provider
	apiKey          string // only to blank it out of upstream messages
}

// Catalog is the set of models the router serves, in the order configured.
type Catalog struct {
	models []*Model
	byID   map[string]*Model
}

// Models lists the models in the order of the file.
func (c *Catalog) Models() []Model {
	out := make([]Model, len(c.models))
	for i, m := range c.models {
		out[i] = *m
	}
	return out
}

// Lookup finds a model by its id, exactly as clients send it.
func (c *Catalog) Lookup(id string) (*Model, bool) {
	m, ok := c.byID[id]
	return m, ok
}

func newCatalog(models []*Model) *Catalog {
	c := &Catalog{models: models, byID: make(map[string]*Model, len(models))}
	for _, m := range models {
		c.byID[m.ID] = m
	}
	return c
}

// LoadCatalog reads the models file at path (YAML or JSON). An empty path
// gives the built-in catalog: modelswitch/echo alone. Upstream keys are read
// with getenv. Every problem found is reported, each naming its entry and
// field.
func LoadCatalog(path string, getenv func(string) string, t Timeouts) (*Catalog, error) {
	if path == "" {
		return newCatalog([]*Model{{
			ID: "modelswitch/echo", OwnedBy: "modelswitch", UpstreamModel: "echo",
			InputPrice: money.PerMillion(money.Dollar), OutputPrice: money.PerMillion(2 * money.Dollar),
			MaxOutputTokens: DefaultMaxOutputTokens, Provider: echo{},
		}}), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("MODELS_FILE: %w", err)
	}
	entries, problems := parseModelsFile(data, getenv)
	if len(problems) > 0 {
		errList := make([]error, len(problems))
		for i, p := range problems {
			errList[i] = fmt.Errorf("MODELS_FILE %s: %s", path, p)
		}
		return nil, errors.Join(errList...)
	}
	return buildCatalog(entries, t.withDefaults()), nil
}

// entry is one validated model of the file, before its provider exists.
type entry struct {
	Model
	providerName string
	baseURL      string
}

// buildCatalog gives models of one upstream and key one provider, so that
// they share its connection pool.
func buildCatalog(entries []entry, t Timeouts) *Catalog {
	openAIs := map[[2]string]*openAI{}
	models := make([]*Model, len(entries))
	for i, e := range entries {
		m := e.Model
		switch e.providerName {
		case "echo":
			m.Provider = echo{}
		case "openai":
			upstream := [2]string{e.baseURL, m.apiKey}
			if openAIs[upstream] == nil {
				openAIs[upstream] = newOpenAI(e.baseURL, m.apiKey, t)
			}
			m.Provider = openAIs[upstream]
		}
		models[i] = &m
	}
	return newCatalog(models)
}

var modelFields = []string{"id", "provider", "base_url", "api_key_env", "upstream_model",
	"input_price", "output_price", "max_output_tokens", "created"}

// parseModelsFile validates the whole file and returns either its entries or
// every problem found in it.
func parseModelsFile(data []byte, getenv func(string) string) ([]entry, []string) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, []string{err.Error()}
	}
	if len(doc.Content) == 0 {
		return nil, []string{"models: the file is empty; list at least one model under \"models:\""}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, []string{"the file must be a mapping with a \"models\" list"}
	}
	fields, problems := mappingFields(root, []string{"models"})
	list := fields["models"]
	switch {
	case list == nil || list.Kind != yaml.SequenceNode:
		return nil, append(problems, "models: required: a list of models")
	case len(list.Content) == 0:
		return nil, append(problems, "models: list at least one model")
	}
	var entries []entry
	seen := map[string]int{}
	for i, node := range list.Content {
		e, label, entryProblems := parseEntry(i, node, getenv)
		if first, dup := seen[e.ID]; dup && e.ID != "" {
			entryProblems = append(entryProblems, fmt.Sprintf("id: %q is already the id of models[%d]", e.ID, first))
		} else if e.ID != "" {
			seen[e.ID] = i
		}
		for _, p := range entryProblems {
			problems = append(problems, label+": "+p)
		}
		entries = append(entries, e)
	}
	return entries, problems
}

// mappingFields indexes a mapping by key and reports keys that are unknown or
// repeated.
func mappingFields(node *yaml.Node, known []string) (map[string]*yaml.Node, []string) {
	fields := map[string]*yaml.Node{}
	var problems []string
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i].Value, node.Content[i+1]
		switch {
		case !contains(known, key):
			problems = append(problems, fmt.Sprintf("%s: unknown field (known fields: %s)", key, strings.Join(known, ", ")))
		case fields[key] != nil:
			problems = append(problems, fmt.Sprintf("%s: given twice", key))
		default:
			fields[key] = value
		}
	}
	return fields, problems
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseEntry validates models[i]. label names it for messages: "models[2] (openai/gpt-4o)".
func parseEntry(i int, node *yaml.Node, getenv func(string) string) (e entry, label string, problems []string) {
	label = fmt.Sprintf("models[%d]", i)
	if node.Kind != yaml.MappingNode {
		return e, label, []string{"must be a mapping of fields, like \"id: openai/gpt-4o-mini\""}
	}
	fields, problems := mappingFields(node, modelFields)
	f := entryFields{fields: fields}

	e.ID = f.text("id")
	if e.ID != "" {
		label += " (" + e.ID + ")"
	}
	owner, name, _ := strings.Cut(e.ID, "/")
	switch {
	case e.ID == "":
		f.fail("id", "required: the model id clients send, like openai/gpt-4o-mini")
	case owner == "" || name == "" || strings.IndexFunc(e.ID, invalidIDRune) >= 0:
		f.fail("id", fmt.Sprintf("%q must be owner/name, without spaces, like openai/gpt-4o-mini", e.ID))
	}
	e.OwnedBy = owner
	e.UpstreamModel = f.text("upstream_model")
	if e.UpstreamModel == "" {
		e.UpstreamModel = name
	}

	e.providerName = f.text("provider")
	e.baseURL = strings.TrimRight(f.text("base_url"), "/")
	keyEnv := f.text("api_key_env")
	switch e.providerName {
	case "":
		f.fail("provider", "required: openai or echo")
	case "echo":
		if e.baseURL != "" {
			f.fail("base_url", "echo answers by itself: remove base_url")
		}
		if keyEnv != "" {
			f.fail("api_key_env", "echo answers by itself: remove api_key_env")
		}
	case "openai":
		if e.baseURL == "" {
			f.fail("base_url", "required for provider openai, like https://api.openai.com/v1")
		} else if u, err := url.Parse(e.baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			f.fail("base_url", fmt.Sprintf("%q must be an absolute http(s) URL, like https://api.openai.com/v1", e.baseURL))
		}
		if keyEnv != "" {
			if e.apiKey = getenv(keyEnv); e.apiKey == "" {
				f.fail("api_key_env", fmt.Sprintf("the environment variable %s is not set", keyEnv))
			}
		}
	default:
		f.fail("provider", fmt.Sprintf("%q is not a provider: use openai or echo", e.providerName))
	}

	e.InputPrice = f.price("input_price", "input")
	e.OutputPrice = f.price("output_price", "output")
	e.MaxOutputTokens = f.integer("max_output_tokens", DefaultMaxOutputTokens)
	if e.MaxOutputTokens <= 0 {
		f.fail("max_output_tokens", fmt.Sprintf("%d must be a whole number above 0", e.MaxOutputTokens))
	}
	e.Created = f.integer("created", 0)
	if e.Created < 0 {
		f.fail("created", fmt.Sprintf("%d must be unix seconds, 0 or more", e.Created))
	}
	return e, label, append(problems, f.problems...)
}

func invalidIDRune(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }

// entryFields reads the fields of one entry, collecting problems as it goes.
type entryFields struct {
	fields   map[string]*yaml.Node
	problems []string
}

func (f *entryFields) fail(field, problem string) {
	f.problems = append(f.problems, field+": "+problem)
}

// scalar is the field's node, or nil when it is absent or null.
func (f *entryFields) scalar(field string) *yaml.Node {
	n := f.fields[field]
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.ShortTag() == "!!null" {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		f.fail(field, "must be a single value, not a list or a mapping")
		return nil
	}
	return n
}

func (f *entryFields) text(field string) string {
	if n := f.scalar(field); n != nil {
		return n.Value
	}
	return ""
}

// price reads the scalar's text, never a float, so that 0.0375 stays exact.
func (f *entryFields) price(field, tokens string) money.PerMillion {
	n := f.scalar(field)
	if n == nil {
		f.fail(field, fmt.Sprintf("required: USD per million %s tokens, like 0.15", tokens))
		return 0
	}
	p, err := money.ParsePrice(n.Value)
	switch {
	case errors.Is(err, money.ErrPlaces):
		f.fail(field, fmt.Sprintf("%q has more than 9 decimal places", n.Value))
	case errors.Is(err, money.ErrRange):
		f.fail(field, fmt.Sprintf("%q is over a billion dollars", n.Value))
	case err != nil:
		f.fail(field, fmt.Sprintf("%q is not a decimal number of dollars", n.Value))
	case p < 0:
		f.fail(field, fmt.Sprintf("%q must be 0 or more", n.Value))
	}
	return p
}

func (f *entryFields) integer(field string, fallback int64) int64 {
	n := f.scalar(field)
	if n == nil {
		return fallback
	}
	var v int64
	if n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		f.fail(field, fmt.Sprintf("%q is not a whole number", n.Value))
		return fallback
	}
	return v
}
