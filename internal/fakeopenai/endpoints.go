package fakeopenai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

const fingerprint = "fp_fake0000"

var jsonNull = json.RawMessage("null")

// ---- chat completions ----

type chatUsage struct {
	PromptTokens            int               `json:"prompt_tokens"`
	CompletionTokens        int               `json:"completion_tokens"`
	TotalTokens             int               `json:"total_tokens"`
	PromptTokensDetails     promptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails completionDetails `json:"completion_tokens_details"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
	AudioTokens  int `json:"audio_tokens"`
}

type completionDetails struct {
	ReasoningTokens          int `json:"reasoning_tokens"`
	AudioTokens              int `json:"audio_tokens"`
	AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             chatUsage    `json:"usage"`
	ServiceTier       string       `json:"service_tier"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int        `json:"index"`
	Message      chatOutMsg `json:"message"`
	Logprobs     any        `json:"logprobs"`
	FinishReason string     `json:"finish_reason"`
}

type chatOutMsg struct {
	Role        string     `json:"role"`
	Content     *string    `json:"content"`
	Refusal     *string    `json:"refusal"`
	ToolCalls   []toolCall `json:"tool_calls,omitempty"`
	Annotations []any      `json:"annotations"`
}

type toolCall struct {
	Index    *int     `json:"index,omitempty"`
	ID       string   `json:"id,omitempty"`
	Type     string   `json:"type,omitempty"`
	Function toolFunc `json:"function"`
}

type toolFunc struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type chatChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	ServiceTier       string          `json:"service_tier"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int        `json:"index"`
	Delta        chunkDelta `json:"delta"`
	Logprobs     any        `json:"logprobs"`
	FinishReason *string    `json:"finish_reason"`
}

type chunkDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	Refusal   json.RawMessage `json:"refusal,omitempty"`
	ToolCalls []toolCall      `json:"tool_calls,omitempty"`
}

// forcedTool returns the tool a request forces (tool_choice "required" or a
// named function) when it has tools.
func forcedTool(req *apiRequest) (string, bool) {
	if len(req.Tools) == 0 || len(req.ToolChoice) == 0 {
		return "", false
	}
	first := ""
	for _, t := range req.Tools {
		if n := t.name(); n != "" {
			first = n
			break
		}
	}
	if first == "" {
		return "", false
	}
	switch req.ToolChoice[0] {
	case '"':
		var s string
		_ = json.Unmarshal(req.ToolChoice, &s)
		return first, s == "required"
	case '{':
		var tc toolDef
		if json.Unmarshal(req.ToolChoice, &tc) == nil {
			if n := tc.name(); n != "" {
				return n, true
			}
		}
	}
	return "", false
}

func ptr[T any](v T) *T { return &v }

func (c *call) chat(req *apiRequest, last string, prompt, cached, allow, drop int) int {
	id := newID("chatcmpl-", 29)
	created := c.s.now().Unix()
	tool, forced := forcedTool(req)
	var text string
	var completion int
	finish := "stop"
	if forced {
		completion, finish = 1, "tool_calls"
	} else {
		var trunc bool
		text, completion, trunc = reply(last, allow)
		if trunc {
			finish = "length"
		}
	}
	usage := chatUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
		PromptTokensDetails: promptDetails{CachedTokens: cached}}
	callID := ""
	if forced {
		callID = newID("call_", 24)
	}

	if !req.Stream {
		msg := chatOutMsg{Role: "assistant", Annotations: []any{}}
		if forced {
			msg.ToolCalls = []toolCall{{ID: callID, Type: "function", Function: toolFunc{Name: tool, Arguments: "{}"}}}
		} else {
			msg.Content = &text
		}
		c.writeJSON(http.StatusOK, chatCompletion{
			ID: id, Object: "chat.completion", Created: created, Model: c.model,
			Choices:     []chatChoice{{Message: msg, FinishReason: finish}},
			Usage:       usage,
			ServiceTier: "default", SystemFingerprint: fingerprint,
		})
		return usage.TotalTokens
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	var usageField json.RawMessage
	if includeUsage {
		usageField = jsonNull
	}
	e := c.startSSE(drop)
	send := func(d chunkDelta, fin *string) bool {
		return e.data(chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: c.model,
			ServiceTier: "default", SystemFingerprint: fingerprint,
			Choices: []chunkChoice{{Delta: d, FinishReason: fin}},
			Usage:   usageField,
		})
	}
	if !send(chunkDelta{Role: "assistant", Content: ptr(""), Refusal: jsonNull}, nil) {
		return -1
	}
	if forced {
		zero := 0
		if !e.delay() ||
			!send(chunkDelta{ToolCalls: []toolCall{{Index: &zero, ID: callID, Type: "function", Function: toolFunc{Name: tool}}}}, nil) ||
			!e.delay() ||
			!send(chunkDelta{ToolCalls: []toolCall{{Index: &zero, Function: toolFunc{Arguments: "{}"}}}}, nil) ||
			!send(chunkDelta{}, &finish) {
			return -1
		}
	} else {
		parts := split(text, c.s.opts.StreamChunks)
		for i, p := range parts {
			var fin *string
			if i == len(parts)-1 {
				fin = &finish
			}
			if !e.delay() || !send(chunkDelta{Content: &p}, fin) {
				return -1
			}
		}
	}
	if includeUsage {
		u, _ := json.Marshal(usage)
		if !e.data(chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: c.model,
			ServiceTier: "default", SystemFingerprint: fingerprint,
			Choices: []chunkChoice{}, Usage: u,
		}) {
			return -1
		}
	}
	e.done()
	return usage.TotalTokens
}

// ---- legacy completions ----

type basicUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type textCompletion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []textChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type textChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

func (c *call) completions(req *apiRequest, prompt string, promptTokens, allow, drop int) int {
	id := newID("cmpl-", 29)
	created := c.s.now().Unix()
	text, completion, trunc := reply(prompt, allow)
	finish := "stop"
	if trunc {
		finish = "length"
	}
	usage := basicUsage{promptTokens, completion, promptTokens + completion}
	u, _ := json.Marshal(usage)
	if !req.Stream {
		c.writeJSON(http.StatusOK, textCompletion{
			ID: id, Object: "text_completion", Created: created, Model: c.model, SystemFingerprint: fingerprint,
			Choices: []textChoice{{Text: text, FinishReason: &finish}},
			Usage:   u,
		})
		return usage.TotalTokens
	}
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	var usageField json.RawMessage
	if includeUsage {
		usageField = jsonNull
	}
	e := c.startSSE(drop)
	parts := split(text, c.s.opts.StreamChunks)
	for i, p := range parts {
		var fin *string
		if i == len(parts)-1 {
			fin = &finish
		}
		if !e.delay() || !e.data(textCompletion{
			ID: id, Object: "text_completion", Created: created, Model: c.model, SystemFingerprint: fingerprint,
			Choices: []textChoice{{Text: p, FinishReason: fin}},
			Usage:   usageField,
		}) {
			return -1
		}
	}
	if includeUsage && !e.data(textCompletion{
		ID: id, Object: "text_completion", Created: created, Model: c.model, SystemFingerprint: fingerprint,
		Choices: []textChoice{}, Usage: u,
	}) {
		return -1
	}
	e.done()
	return usage.TotalTokens
}

// ---- responses ----

type responseObj struct {
	ID                 string          `json:"id"`
	Object             string          `json:"object"`
	CreatedAt          int64           `json:"created_at"`
	Status             string          `json:"status"`
	Background         bool            `json:"background"`
	Error              any             `json:"error"`
	IncompleteDetails  any             `json:"incomplete_details"`
	Instructions       *string         `json:"instructions"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	Model              string          `json:"model"`
	Output             []any           `json:"output"`
	ParallelToolCalls  bool            `json:"parallel_tool_calls"`
	PreviousResponseID any             `json:"previous_response_id"`
	Reasoning          reasoning       `json:"reasoning"`
	ServiceTier        string          `json:"service_tier"`
	Store              bool            `json:"store"`
	Temperature        float64         `json:"temperature"`
	Text               textConfig      `json:"text"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Tools              []any           `json:"tools"`
	TopP               float64         `json:"top_p"`
	Truncation         string          `json:"truncation"`
	Usage              *respUsage      `json:"usage"`
	User               any             `json:"user"`
	Metadata           map[string]any  `json:"metadata"`
}

type reasoning struct {
	Effort  any `json:"effort"`
	Summary any `json:"summary"`
}

type textConfig struct {
	Format struct {
		Type string `json:"type"`
	} `json:"format"`
}

type respUsage struct {
	InputTokens int `json:"input_tokens"`
	// InputTokensDetails has both fields the API reports, as the official
	// Node SDK (openai 7.59, resources/responses ResponseUsage.
	// InputTokensDetails) declares them, neither optional: cached_tokens
	// read from the prompt cache, cache_write_tokens written to it.
	InputTokensDetails struct {
		CachedTokens     int `json:"cached_tokens"`
		CacheWriteTokens int `json:"cache_write_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

type outputMessage struct {
	Type    string       `json:"type"`
	ID      string       `json:"id"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type outputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

type functionCall struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Status    string `json:"status"`
}

type respEvent struct {
	Type           string          `json:"type"`
	SequenceNumber int             `json:"sequence_number"`
	Response       *responseObj    `json:"response,omitempty"`
	OutputIndex    *int            `json:"output_index,omitempty"`
	ItemID         string          `json:"item_id,omitempty"`
	ContentIndex   *int            `json:"content_index,omitempty"`
	Item           any             `json:"item,omitempty"`
	Part           *outputText     `json:"part,omitempty"`
	Delta          *string         `json:"delta,omitempty"`
	Text           *string         `json:"text,omitempty"`
	Name           string          `json:"name,omitempty"`
	Arguments      *string         `json:"arguments,omitempty"`
	Logprobs       json.RawMessage `json:"logprobs,omitempty"`
}

var emptyArray = json.RawMessage("[]")

func (c *call) responses(req *apiRequest, last string, prompt, cached, allow, drop int, prev *storedResponse) int {
	id := newID("resp_", 48)
	created := c.s.now().Unix()
	tool, forced := forcedTool(req)
	var text string
	var completion int
	status := "completed"
	var incomplete any
	if forced {
		completion = 1
	} else {
		var trunc bool
		text, completion, trunc = reply(last, allow)
		if trunc {
			status = "incomplete"
			incomplete = map[string]string{"reason": "max_output_tokens"}
		}
	}
	usage := &respUsage{InputTokens: prompt, OutputTokens: completion, TotalTokens: prompt + completion}
	usage.InputTokensDetails.CachedTokens = cached
	if !c.s.opts.NoPromptCache {
		// What the cache keeps of this prompt (its cacheable prefix) and
		// did not hold before is written now.
		usage.InputTokensDetails.CacheWriteTokens = max(cachedTokensFor(prompt)-cached, 0)
	}
	toolChoice := req.ToolChoice
	if len(toolChoice) == 0 {
		toolChoice = json.RawMessage(`"auto"`)
	}
	resp := responseObj{
		ID: id, Object: "response", CreatedAt: created, Status: status,
		IncompleteDetails: incomplete, Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens,
		Model: c.model, ParallelToolCalls: true, ServiceTier: "default", Store: req.Store == nil || *req.Store,
		Temperature: 1, ToolChoice: toolChoice, Tools: []any{}, TopP: 1, Truncation: "disabled",
		Usage: usage, Metadata: map[string]any{},
	}
	resp.Text.Format.Type = "text"
	var item any
	var msg outputMessage
	var fc functionCall
	if forced {
		fc = functionCall{Type: "function_call", ID: newID("fc_", 48), CallID: newID("call_", 24), Name: tool, Arguments: "{}", Status: "completed"}
		item = fc
	} else {
		msg = outputMessage{Type: "message", ID: newID("msg_", 48), Status: status, Role: "assistant",
			Content: []outputText{{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}}}
		item = msg
	}
	resp.Output = []any{item}
	if prev != nil {
		resp.PreviousResponseID = prev.resp.ID
	}
	if resp.Store { // stored unless "store": false
		in, ids := inputItems(req.Input)
		c.storeResponse(resp, in, ids)
	}
	if !req.Stream {
		c.writeJSON(http.StatusOK, resp)
		return usage.TotalTokens
	}

	e := c.startSSE(drop)
	seq := 0
	send := func(ev respEvent) bool {
		ev.SequenceNumber = seq
		seq++
		return e.event(ev.Type, ev)
	}
	pending := resp
	pending.Status, pending.IncompleteDetails, pending.Usage, pending.Output = "in_progress", nil, nil, []any{}
	zero := 0
	if !send(respEvent{Type: "response.created", Response: &pending}) ||
		!send(respEvent{Type: "response.in_progress", Response: &pending}) {
		return -1
	}
	if forced {
		started := fc
		started.Arguments, started.Status = "", "in_progress"
		if !send(respEvent{Type: "response.output_item.added", OutputIndex: &zero, Item: started}) ||
			!e.delay() ||
			!send(respEvent{Type: "response.function_call_arguments.delta", ItemID: fc.ID, OutputIndex: &zero, Delta: &fc.Arguments}) ||
			!send(respEvent{Type: "response.function_call_arguments.done", ItemID: fc.ID, OutputIndex: &zero, Name: fc.Name, Arguments: &fc.Arguments}) ||
			!send(respEvent{Type: "response.output_item.done", OutputIndex: &zero, Item: fc}) {
			return -1
		}
	} else {
		started := msg
		started.Status, started.Content = "in_progress", []outputText{}
		if !send(respEvent{Type: "response.output_item.added", OutputIndex: &zero, Item: started}) ||
			!send(respEvent{Type: "response.content_part.added", ItemID: msg.ID, OutputIndex: &zero, ContentIndex: &zero,
				Part: &outputText{Type: "output_text", Annotations: []any{}, Logprobs: []any{}}}) {
			return -1
		}
		for _, p := range split(text, c.s.opts.StreamChunks) {
			if !e.delay() || !send(respEvent{Type: "response.output_text.delta", ItemID: msg.ID, OutputIndex: &zero, ContentIndex: &zero, Delta: &p, Logprobs: emptyArray}) {
				return -1
			}
		}
		if !send(respEvent{Type: "response.output_text.done", ItemID: msg.ID, OutputIndex: &zero, ContentIndex: &zero, Text: &text, Logprobs: emptyArray}) ||
			!send(respEvent{Type: "response.content_part.done", ItemID: msg.ID, OutputIndex: &zero, ContentIndex: &zero, Part: &msg.Content[0]}) ||
			!send(respEvent{Type: "response.output_item.done", OutputIndex: &zero, Item: msg}) {
			return -1
		}
	}
	final := "response.completed"
	if status == "incomplete" {
		final = "response.incomplete"
	}
	if !send(respEvent{Type: final, Response: &resp}) {
		return -1
	}
	return usage.TotalTokens
}

// ---- embeddings ----

type embeddingList struct {
	Object string      `json:"object"`
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// Embed is the fake's embedding of text: a feature-hashed bag of its
// lower-cased words (letters and digits), L2-normalised, so that texts with
// the same words have cosine similarity 1 and texts sharing most words are
// close.
func Embed(text string, dims int) []float32 {
	v := make([]float64, dims)
	seen := false
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		h := fnv.New64a()
		_, _ = h.Write([]byte(w))
		x := h.Sum64()
		sign := 1.0
		if x>>63 == 1 {
			sign = -1
		}
		v[x%uint64(dims)] += sign
		seen = true
	}
	if !seen {
		v[0] = 1
	}
	var n float64
	for _, x := range v {
		n += x * x
	}
	n = math.Sqrt(n)
	if n == 0 {
		n, v[0] = 1, 1
	}
	out := make([]float32, dims)
	for i, x := range v {
		out[i] = float32(x / n)
	}
	return out
}

func (c *call) embeddings(req *apiRequest, inputs []string, prompt int) int {
	dims := c.s.opts.EmbeddingDims
	if req.Dimensions > 0 && req.Dimensions <= 4096 {
		dims = req.Dimensions
	}
	out := embeddingList{Object: "list", Model: c.model, Data: make([]embedding, len(inputs))}
	for i, in := range inputs {
		vec := Embed(in, dims)
		var e any = vec
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(vec))
			for j, f := range vec {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		out.Data[i] = embedding{Object: "embedding", Index: i, Embedding: e}
	}
	out.Usage.PromptTokens, out.Usage.TotalTokens = prompt, prompt
	c.writeJSON(http.StatusOK, out)
	return prompt
}

// ---- moderations ----

var moderationCategories = []string{
	"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
	"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence", "violence/graphic",
}

type moderationResult struct {
	Flagged                   bool                `json:"flagged"`
	Categories                map[string]bool     `json:"categories"`
	CategoryScores            map[string]float64  `json:"category_scores"`
	CategoryAppliedInputTypes map[string][]string `json:"category_applied_input_types"`
}

// moderations flags an input as violence when it contains "kill" or
// "violence".
func (c *call) moderations(inputs []string) int {
	res := make([]moderationResult, len(inputs))
	for i, in := range inputs {
		l := strings.ToLower(in)
		violent := strings.Contains(l, "kill") || strings.Contains(l, "violence")
		r := moderationResult{Flagged: violent, Categories: map[string]bool{}, CategoryScores: map[string]float64{}, CategoryAppliedInputTypes: map[string][]string{}}
		for _, cat := range moderationCategories {
			r.Categories[cat] = false
			r.CategoryScores[cat] = 0.0001
			r.CategoryAppliedInputTypes[cat] = []string{"text"}
		}
		if violent {
			r.Categories["violence"] = true
			r.CategoryScores["violence"] = 0.98
		}
		res[i] = r
	}
	c.writeJSON(http.StatusOK, struct {
		ID      string             `json:"id"`
		Model   string             `json:"model"`
		Results []moderationResult `json:"results"`
	}{newID("modr-", 29), c.model, res})
	return -1
}

// ---- models ----

type modelObj struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (c *call) models(ep endpoint, id string) {
	if ep == epModels {
		data := make([]modelObj, len(c.s.modelList))
		for i, m := range c.s.modelList {
			data[i] = modelObj{m, "model", 1700000000, "system"}
		}
		c.writeJSON(http.StatusOK, struct {
			Object string     `json:"object"`
			Data   []modelObj `json:"data"`
		}{"list", data})
		return
	}
	if _, ok := c.s.models[id]; !ok {
		c.fail(http.StatusNotFound, "The model `"+id+"` does not exist or you do not have access to it.", "invalid_request_error", strp("model"), strp("model_not_found"))
		return
	}
	c.writeJSON(http.StatusOK, modelObj{id, "model", 1700000000, "system"})
}

// ---- audio ----

func (c *call) audio(f audioForm) {
	text := "transcribed " + strconv.Itoa(f.size) + " bytes"
	if f.format == "text" || f.format == "srt" || f.format == "vtt" {
		c.writeBody(http.StatusOK, []string{"text/plain; charset=utf-8"}, []byte(text+"\n"))
		return
	}
	c.writeJSON(http.StatusOK, struct {
		Text string `json:"text"`
	}{text})
}

// ---- SSE ----

type sseWriter struct {
	c    *call
	rc   *http.ResponseController
	n    int
	drop int
	ok   bool
	buf  []byte
}

func (c *call) startSSE(drop int) *sseWriter {
	if c.ws != nil { // a Responses WebSocket session: each event is one message
		c.status = http.StatusOK
		return &sseWriter{c: c, drop: drop, ok: true}
	}
	c.w.Header()[hCacheCtrl] = noCache
	c.writeHeader(http.StatusOK, ctSSE)
	e := &sseWriter{c: c, rc: http.NewResponseController(c.w), drop: drop, ok: true}
	if e.rc.Flush() != nil {
		e.ok = false
	}
	return e
}

// delay waits ChunkDelay (false if the client went away).
func (e *sseWriter) delay() bool {
	if !e.ok {
		return false
	}
	if d := e.c.s.opts.ChunkDelay; d > 0 && !sleep(e.c.r, d) {
		e.ok = false
	}
	return e.ok
}

func (e *sseWriter) data(v any) bool { return e.event("", v) }

func (e *sseWriter) event(name string, v any) bool {
	if !e.ok {
		return false
	}
	b, err := json.Marshal(v)
	if err != nil {
		e.ok = false
		return false
	}
	if ws := e.c.ws; ws != nil {
		if ev, isResp := v.(respEvent); isResp && ev.Response != nil && ev.Response.Status != "in_progress" {
			ws.remember(ev.Response)
			e.c.recordEvent() // before the last event, which a client may answer by reading the records
		}
		if ws.streamID != "" && len(b) > 1 && b[len(b)-1] == '}' {
			lane, _ := json.Marshal(ws.streamID)
			b = append(append(append(b[:len(b)-1], `,"stream_id":`...), lane...), '}')
		}
		e.ok = ws.send(b)
		return e.ok
	}
	e.buf = e.buf[:0]
	if name != "" {
		e.buf = append(e.buf, "event: "...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, '\n')
	}
	e.buf = append(e.buf, "data: "...)
	e.buf = append(e.buf, b...)
	e.buf = append(e.buf, "\n\n"...)
	return e.write()
}

func (e *sseWriter) done() {
	if !e.ok || e.c.ws != nil {
		return
	}
	e.buf = append(e.buf[:0], "data: [DONE]\n\n"...)
	e.write()
}

func (e *sseWriter) write() bool {
	if e.c.r.Context().Err() != nil {
		e.ok = false
		return false
	}
	if _, err := e.c.w.Write(e.buf); err != nil {
		e.ok = false
		return false
	}
	if e.rc.Flush() != nil {
		e.ok = false
		return false
	}
	e.n++
	if e.drop > 0 && e.n >= e.drop {
		panic(http.ErrAbortHandler)
	}
	return true
}
