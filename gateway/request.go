package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"modelswitch/db/money"
	"modelswitch/errs"
)

// Call is one client request prepared for its model.
type Call struct {
	Model    *Model
	Endpoint Endpoint
	// Body is what is forwarded: the client's bytes with only "model"
	// replaced by the upstream's name and, when streaming,
	// stream_options.include_usage set to true, so that usage is always metered.
	Body         []byte
	Stream       bool
	IncludeUsage bool  // the client asked for the usage chunk
	InputTokens  int64 // conservative estimate of the input
	// MaxOutputTokens is the most the request may produce: max_completion_tokens,
	// else max_tokens, else the model's maximum, times n; 0 for embeddings.
	MaxOutputTokens int64
	Hold            money.USD // the most the call can cost
}

// maxChoices is OpenAI's own bound on n.
const maxChoices = 128

// interpreted are the members the router reads, by endpoint; every other
// member passes through unread.
var interpreted = map[Endpoint][]string{
	ChatCompletions: {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n"},
	Embeddings:      {"model", "input"},
}

// Prepare validates a client's request body for endpoint and prepares it for
// its model. The call keeps a copy of what it forwards, never body itself, so
// body may be reused once Prepare returns (Fiber reuses a request's buffer,
// and a stream outlives its handler). Failures are *errs.Error: 400 naming
// the parameter at fault, or 404 model_not_found.
func (c *Catalog) Prepare(endpoint Endpoint, body []byte) (*Call, error) {
	names, ok := interpreted[endpoint]
	if !ok {
		return nil, fmt.Errorf("gateway: unknown endpoint %q", endpoint)
	}
	if !json.Valid(body) {
		return nil, errs.InvalidField("", "invalid_json", "The request body is not valid JSON.")
	}
	start := skipSpace(body, 0)
	if body[start] != '{' {
		return nil, errs.InvalidField("", "invalid_json", "Send a JSON object in the request body.")
	}
	o, err := readObject(body, start, names, "")
	if err != nil {
		return nil, err
	}
	model, err := c.model(o)
	if err != nil {
		return nil, err
	}
	call := &Call{Model: model, Endpoint: endpoint, InputTokens: estimateBody(body)}
	edits := []edit{{o.members["model"].start, o.members["model"].end, quote(model.UpstreamModel)}}
	switch endpoint {
	case ChatCompletions:
		streamEdits, err := call.readChat(o)
		if err != nil {
			return nil, err
		}
		edits = append(edits, streamEdits...)
	case Embeddings:
		if err := readEmbeddings(o); err != nil {
			return nil, err
		}
	}
	call.Body = apply(body, edits)
	call.Hold = addUSD(model.InputPrice.Cost(call.InputTokens), model.OutputPrice.Cost(call.MaxOutputTokens))
	return call, nil
}

// Send forwards the call to its model's provider.
func (c *Call) Send(ctx context.Context) (*Response, error) {
	return c.Model.Provider.Send(ctx, Request{Endpoint: c.Endpoint, Body: c.Body, Stream: c.Stream})
}

// Cost is what usage costs at the model's prices.
func (c *Call) Cost(u Usage) money.USD {
	return addUSD(c.Model.InputPrice.Cost(u.Input), c.Model.OutputPrice.Cost(u.Output))
}

// addUSD adds without wrapping around: Cost saturates, so may a sum of costs.
func addUSD(a, b money.USD) money.USD {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func (c *Catalog) model(o object) (*Model, error) {
	name, err := o.string("model")
	switch {
	case err != nil:
		return nil, err
	case name == "":
		return nil, errs.InvalidField("model", "missing_field", `"model" is required: send a model id from GET /v1/models.`)
	}
	m, ok := c.Lookup(name)
	if !ok {
		return nil, &errs.Error{Kind: errs.NotFound, Code: "model_not_found", Field: "model",
			Message: fmt.Sprintf("There is no model %q. GET /v1/models lists the models you can use.", name)}
	}
	return m, nil
}

// readChat reads what the router needs from a chat completion request and
// returns the edits that make the upstream report usage when streaming.
func (c *Call) readChat(o object) ([]edit, error) {
	messages, present := o.value("messages")
	if !present {
		return nil, errs.InvalidField("messages", "missing_field", `"messages" is required: send the conversation, like [{"role": "user", "content": "Hello"}].`)
	}
	if messages[0] != '[' {
		return nil, errs.InvalidField("messages", "invalid_type", `"messages" must be an array of messages, like [{"role": "user", "content": "Hello"}].`)
	}
	list := scanArray(messages, 0)
	if len(list) == 0 {
		return nil, errs.InvalidField("messages", "invalid_value", `"messages" must hold at least one message.`)
	}
	for _, m := range list {
		if messages[m] != '{' {
			return nil, errs.InvalidField("messages", "invalid_type", `Each message must be an object, like {"role": "user", "content": "Hello"}.`)
		}
	}
	stream, err := o.bool("stream")
	if err != nil {
		return nil, err
	}
	c.Stream = stream
	maxTokens, err := o.count("max_tokens", math.MaxInt64)
	if err != nil {
		return nil, err
	}
	maxCompletionTokens, err := o.count("max_completion_tokens", math.MaxInt64)
	if err != nil {
		return nil, err
	}
	n, err := o.count("n", maxChoices)
	if err != nil {
		return nil, err
	}
	c.MaxOutputTokens = mulTokens(firstSet(maxCompletionTokens, maxTokens, c.Model.MaxOutputTokens), max(n, 1))
	return c.readStreamOptions(o)
}

// firstSet is the first of values that is set (above 0).
func firstSet(values ...int64) int64 {
	for _, v := range values {
		if v > 0 {
			return v
		}
	}
	return 0
}

// mulTokens multiplies without wrapping around; b > 0.
func mulTokens(a, b int64) int64 {
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// readStreamOptions reads stream_options.include_usage and, when streaming,
// returns the edits that set it to true.
func (c *Call) readStreamOptions(o object) ([]edit, error) {
	const usageOn = `"include_usage":true`
	raw, sent := o.members["stream_options"]
	opts, present := o.value("stream_options")
	if !present {
		switch {
		case !c.Stream:
			return nil, nil
		case sent: // as null
			return []edit{{raw.start, raw.end, "{" + usageOn + "}"}}, nil
		}
		last := o.order[len(o.order)-1]
		return []edit{{last.end, last.end, `,"stream_options":{` + usageOn + "}"}}, nil
	}
	if opts[0] != '{' {
		return nil, errs.InvalidField("stream_options", "invalid_type", `"stream_options" must be an object, like {"include_usage": true}.`)
	}
	inner, err := readObject(o.data, raw.start, []string{"include_usage"}, "stream_options.")
	if err != nil {
		return nil, err
	}
	include, err := inner.bool("include_usage")
	if err != nil {
		return nil, err
	}
	c.IncludeUsage = c.Stream && include
	switch member, sent := inner.members["include_usage"]; {
	case !c.Stream:
		return nil, nil
	case sent:
		return []edit{{member.start, member.end, "true"}}, nil
	case len(inner.order) == 0:
		return []edit{{raw.start + 1, raw.start + 1, usageOn}}, nil
	default:
		return []edit{{raw.start + 1, raw.start + 1, usageOn + ","}}, nil
	}
}

func readEmbeddings(o object) error {
	input, present := o.value("input")
	if !present {
		return errs.InvalidField("input", "missing_field", `"input" is required: send the text to embed, as a string or an array of strings.`)
	}
	switch input[0] {
	case '"':
		if string(input) == `""` {
			return errs.InvalidField("input", "invalid_value", `"input" must not be empty.`)
		}
	case '[':
		if input[skipSpace(input, 1)] == ']' {
			return errs.InvalidField("input", "invalid_value", `"input" must hold at least one item.`)
		}
	default:
		return errs.InvalidField("input", "invalid_type", `"input" must be a string or an array of strings.`)
	}
	return nil
}

// quote is s as a JSON string.
func quote(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// object is a JSON object of a request body, located in its bytes.
type object struct {
	data    []byte
	order   []member          // every member, in the order sent
	members map[string]member // the interpreted ones, by name
	prefix  string            // for parameters: "stream_options."
}

// readObject indexes the object at data[i]. A member sent twice is refused,
// and so is a variant in case of an interpreted name: some upstreams decode
// JSON ignoring case and would read what the router did not.
func readObject(data []byte, i int, names []string, prefix string) (object, error) {
	o := object{data: data, members: map[string]member{}, prefix: prefix}
	o.order, _ = scanObject(data, i)
	seen := map[string]bool{}
	for _, m := range o.order {
		if seen[m.name] {
			return o, errs.InvalidField(prefix+m.name, "duplicate_field", fmt.Sprintf("The field %q is sent twice.", prefix+m.name))
		}
		seen[m.name] = true
		for _, name := range names {
			switch {
			case m.name == name:
				o.members[name] = m
			case strings.EqualFold(m.name, name):
				return o, errs.InvalidField(prefix+m.name, "unknown_field",
					fmt.Sprintf("Unknown field %q: field names are case-sensitive, send %q.", prefix+m.name, prefix+name))
			}
		}
	}
	return o, nil
}

// value is a member's raw JSON; present is false when it is absent or null.
func (o object) value(name string) (raw []byte, present bool) {
	m, ok := o.members[name]
	if !ok || string(o.data[m.start:m.end]) == "null" {
		return nil, false
	}
	return o.data[m.start:m.end], true
}

func (o object) string(name string) (string, error) {
	raw, present := o.value(name)
	var s string
	if present && (raw[0] != '"' || json.Unmarshal(raw, &s) != nil) {
		return "", errs.InvalidField(o.prefix+name, "invalid_type", fmt.Sprintf("%q must be a string.", o.prefix+name))
	}
	return s, nil
}

func (o object) bool(name string) (bool, error) {
	raw, present := o.value(name)
	switch {
	case !present || string(raw) == "false":
		return false, nil
	case string(raw) == "true":
		return true, nil
	}
	return false, errs.InvalidField(o.prefix+name, "invalid_type", fmt.Sprintf("%q must be true or false.", o.prefix+name))
}

// count reads a whole number from 1 to most, written plainly ("100", not
// "1e2"); 0 when it is absent.
func (o object) count(name string, most int64) (int64, error) {
	raw, present := o.value(name)
	if !present {
		return 0, nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < 1 || v > most {
		bound := "1 or more"
		if most < math.MaxInt64 {
			bound = fmt.Sprintf("from 1 to %d", most)
		}
		return 0, errs.InvalidField(o.prefix+name, "invalid_value", fmt.Sprintf("%q must be a whole number %s.", o.prefix+name, bound))
	}
	return v, nil
}
