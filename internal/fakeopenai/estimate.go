package fakeopenai

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// apiRequest is the union of the request fields the fake looks at.
type apiRequest struct {
	Model               *string         `json:"model"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	Messages            []chatMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	Input               json.RawMessage `json:"input"`
	Instructions        *string         `json:"instructions"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	MaxOutputTokens     *int            `json:"max_output_tokens"`
	Tools               []toolDef       `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	EncodingFormat      string          `json:"encoding_format"`
	Dimensions          int             `json:"dimensions"`
	Store               *bool           `json:"store"`
	PreviousResponseID  *string         `json:"previous_response_id"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// toolDef covers both chat ({"type":"function","function":{"name":..}}) and
// responses ({"type":"function","name":..}) tool definitions.
type toolDef struct {
	Type     string `json:"type"`
	Name     string `json:"name"`
	Function *struct {
		Name string `json:"name"`
	} `json:"function"`
}

func (t toolDef) name() string {
	if t.Function != nil && t.Function.Name != "" {
		return t.Function.Name
	}
	return t.Name
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// inputItem is a responses input item (or moderation input part).
type inputItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Text    string          `json:"text"`
	Output  json.RawMessage `json:"output"`
}

// textCounter accumulates the text of a request.
type textCounter struct {
	runes  int
	tokens int // pre-tokenised input
	// keep collects the text itself, concatenated in the order counted, for
	// the prompt cache's prefix comparison.
	keep bool
	text strings.Builder
}

func (c *textCounter) add(s string) {
	c.runes += utf8.RuneCountInString(s)
	if c.keep {
		c.text.WriteString(s)
	}
}

// promptTokens is ceil(runes/4) plus pre-tokenised tokens.
func (c *textCounter) promptTokens() int { return (c.runes+3)/4 + c.tokens }

func isJSONString(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '"' }
func isJSONArray(raw json.RawMessage) bool  { return len(raw) > 0 && raw[0] == '[' }

// contentText returns the text of a message content: a string or an array of
// parts with "text".
func contentText(raw json.RawMessage, c *textCounter) string {
	switch {
	case isJSONString(raw):
		var s string
		if json.Unmarshal(raw, &s) == nil {
			c.add(s)
			return s
		}
	case isJSONArray(raw):
		var parts []contentPart
		if json.Unmarshal(raw, &parts) == nil {
			var b strings.Builder
			for _, p := range parts {
				if p.Text == "" {
					continue
				}
				c.add(p.Text)
				if b.Len() > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(p.Text)
			}
			return b.String()
		}
	}
	return ""
}

// chatText counts all message text and returns the last user message's text.
func chatText(msgs []chatMessage, c *textCounter) (last string) {
	for _, m := range msgs {
		t := contentText(m.Content, c)
		if m.Role == "user" {
			last = t
		}
	}
	return last
}

// promptList decodes a string | []string | []int | [][]int input into its
// strings, counting tokens of pre-tokenised parts.
func promptList(raw json.RawMessage, c *textCounter) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if isJSONString(raw) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			c.add(s)
			return []string{s}
		}
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []string
	var ints []string
	for _, it := range items {
		switch {
		case isJSONString(it):
			var s string
			if json.Unmarshal(it, &s) == nil {
				c.add(s)
				out = append(out, s)
			}
		case isJSONArray(it):
			var toks []int
			if json.Unmarshal(it, &toks) == nil {
				c.tokens += len(toks)
				out = append(out, string(it))
			}
		case len(it) > 0 && it[0] == '{':
			var p inputItem
			if json.Unmarshal(it, &p) == nil && p.Text != "" {
				c.add(p.Text)
				out = append(out, p.Text)
			}
		default: // an integer token
			c.tokens++
			ints = append(ints, string(it))
		}
	}
	if len(ints) > 0 {
		out = append(out, strings.Join(ints, ","))
	}
	return out
}

// responsesText counts instructions and all input text, and returns the last
// user message's text.
func responsesText(req *apiRequest, c *textCounter) (last string) {
	if req.Instructions != nil {
		c.add(*req.Instructions)
	}
	raw := req.Input
	if isJSONString(raw) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			c.add(s)
		}
		return s
	}
	var items []inputItem
	if json.Unmarshal(raw, &items) != nil {
		return ""
	}
	for _, it := range items {
		if len(it.Content) > 0 {
			t := contentText(it.Content, c)
			if it.Role == "user" {
				last = t
			}
		}
		if isJSONString(it.Output) { // function_call_output
			var s string
			if json.Unmarshal(it.Output, &s) == nil {
				c.add(s)
			}
		}
	}
	return last
}

// allowance is the completion allowance of a request.
func (r *apiRequest) allowance() int {
	a := 0
	for _, p := range []*int{r.MaxTokens, r.MaxCompletionTokens, r.MaxOutputTokens} {
		if p != nil && *p > a {
			a = *p
		}
	}
	return a
}

// reply builds the deterministic answer text: "echo: " + text, truncated to
// max words when max > 0. It returns the text, its token count and whether
// it was truncated.
func reply(text string, max int) (string, int, bool) {
	out := "echo: " + text
	words := strings.Fields(out)
	if max > 0 && len(words) > max {
		return strings.Join(words[:max], " "), max, true
	}
	return out, len(words), false
}

// split cuts s into n pieces at rune boundaries whose concatenation is s.
func split(s string, n int) []string {
	out := make([]string, n)
	total := utf8.RuneCountInString(s)
	idx := 0
	start := 0
	for i := 0; i < n; i++ {
		want := total * (i + 1) / n
		end := start
		for idx < want {
			_, size := utf8.DecodeRuneInString(s[end:])
			end += size
			idx++
		}
		out[i] = s[start:end]
		start = end
	}
	return out
}
