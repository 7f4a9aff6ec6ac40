package gateway

import (
	"bytes"
	"io"
	"testing"
)

// TestReadMetersWhatTheAnswerReports: usage and finish reason are read from
// answers of every shape; a usage of the wrong shape counts as absent (the
// output is then estimated), and an odd "choices" never hides the usage.
func TestReadMetersWhatTheAnswerReports(t *testing.T) {
	call, err := testCatalog(t).Prepare(ChatCompletions, []byte(`{"model":"test/gpt","messages":[{"role":"user","content":"Hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, answer string
		usage        Usage // Estimated: only Output is checked, for > 0
		finish       string
	}{
		{"plain", `{"choices":[{"message":{"content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7}}`, Usage{Input: 12, Output: 7}, "stop"},
		{"usage first, spaces", ` { "usage" : { "completion_tokens" : 7 , "prompt_tokens" : 12 } , "choices" : [ { "finish_reason" : "length" } ] } `, Usage{Input: 12, Output: 7}, "length"},
		{"odd choices", `{"choices":"nothing","usage":{"prompt_tokens":12,"completion_tokens":7}}`, Usage{Input: 12, Output: 7}, ""},
		{"escaped names", `{"us\u0061ge":{"prompt_tokens":12,"completion_tokens":7},"choices":[{"finish_reason":"st\u006fp"}]}`, Usage{Input: 12, Output: 7}, "stop"},
		{"last of twice", `{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":12,"completion_tokens":7}}`, Usage{Input: 12, Output: 7}, ""},
		{"not a whole number", `{"usage":{"prompt_tokens":12.5,"completion_tokens":"7"}}`, Usage{}, ""},
		{"negative", `{"usage":{"prompt_tokens":-3,"completion_tokens":7}}`, Usage{Output: 7}, ""},
		{"finish reason null", `{"choices":[{"finish_reason":null}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, Usage{Input: 1, Output: 2}, ""},
		{"no usage", `{"choices":[{"message":{"content":"Hello there, how are you?"},"finish_reason":"stop"}]}`, Usage{Estimated: true}, "stop"},
		{"usage null", `{"choices":[{"message":{"content":"Hello there"}}],"usage":null}`, Usage{Estimated: true}, ""},
		{"usage a string", `{"choices":[{"message":{"content":"Hello there"}}],"usage":"12"}`, Usage{Estimated: true}, ""},
		{"not JSON", `{"usage":{"prompt_tokens":12`, Usage{Estimated: true}, ""},
		{"an array", `[{"usage":{"prompt_tokens":12,"completion_tokens":7}}]`, Usage{Estimated: true}, ""},
	}
	for _, c := range cases {
		r, err := call.Read(&Response{Status: 200, Body: io.NopCloser(bytes.NewReader([]byte(c.answer)))}, 0)
		if err != nil || !r.Produced || string(r.Body) != c.answer {
			t.Errorf("%s: %v, produced %v", c.name, err, r.Produced)
			continue
		}
		switch {
		case r.FinishReason != c.finish:
			t.Errorf("%s: finish reason %q, want %q", c.name, r.FinishReason, c.finish)
		case c.usage.Estimated && (!r.Usage.Estimated || r.Usage.Input != call.InputTokens):
			t.Errorf("%s: usage %+v, want an estimate", c.name, r.Usage)
		case c.usage.Estimated && c.name == "no usage" && r.Usage.Output == 0:
			t.Errorf("%s: the output's text was not counted", c.name)
		case !c.usage.Estimated && r.Usage != c.usage:
			t.Errorf("%s: usage %+v, want %+v", c.name, r.Usage, c.usage)
		}
	}
}

// FuzzRead: no answer an upstream sends makes metering fail or panic.
func FuzzRead(f *testing.F) {
	f.Add(`{"choices":[{"message":{"content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7}}`)
	f.Add(`{"us\u0061ge":{"prompt_tokens":1e3},"choices":[{"finish_reason":"st\"op"}]}`)
	f.Add(`{"choices":[[]],"usage":[]}`)
	call, err := testCatalog(f).Prepare(ChatCompletions, []byte(`{"model":"test/gpt","messages":[{"role":"user","content":"Hi"}]}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, answer string) {
		r, err := call.Read(&Response{Status: 200, Body: io.NopCloser(bytes.NewReader([]byte(answer)))}, 0)
		if err != nil || !r.Produced || r.Usage.Input < 0 || r.Usage.Output < 0 {
			t.Fatalf("%v %+v", err, r.Usage)
		}
	})
}
