package sse

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

type ev struct{ name, data string }

// parseAll feeds in to a parser in pieces cut by split and collects the events.
func parseAll(in string, split func(string) []string) []ev {
	var p Parser
	var out []ev
	drain := func() {
		for {
			e, ok := p.Next()
			if !ok {
				return
			}
			out = append(out, ev{e.Name, string(e.Data)})
		}
	}
	for _, piece := range split(in) {
		p.Feed([]byte(piece))
		drain()
	}
	p.Close()
	drain()
	return out
}

func TestParser(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []ev
	}{
		{"chat chunks", "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n",
			[]ev{{"", `{"a":1}`}, {"", `{"a":2}`}, {"", "[DONE]"}}},
		{"named events", "event: response.created\ndata: {}\n\nevent: custom.thing\ndata: x\n\n",
			[]ev{{"response.created", "{}"}, {"custom.thing", "x"}}},
		{"CRLF", "event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n", []ev{{"a", "1"}, {"", "2"}}},
		{"CR", "data: 1\r\rdata: 2\r\r", []ev{{"", "1"}, {"", "2"}}},
		{"mixed endings", "data: 1\r\n\ndata: 2\n\r\n", []ev{{"", "1"}, {"", "2"}}},
		{"multi-line data", "data: a\ndata: b\ndata:\ndata: c\n\n", []ev{{"", "a\nb\n\nc"}}},
		{"comments and unknown fields", ": ping\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n: bye\n\n",
			[]ev{{"", "x"}}},
		{"event without data is dropped", "event: a\n\ndata: x\n\n", []ev{{"", "x"}}},
		{"name does not leak to the next event", "event: a\ndata: 1\n\ndata: 2\n\n",
			[]ev{{"a", "1"}, {"", "2"}}},
		{"space handling", "data:x\n\ndata:  x\n\ndata\n\n", []ev{{"", "x"}, {"", " x"}, {"", ""}}},
		{"BOM", "\xEF\xBB\xBFdata: x\n\n", []ev{{"", "x"}}},
		{"BOM only at start", "data: x\n\n\xEF\xBB\xBFdata: y\n\n", []ev{{"", "x"}}},
		{"unterminated at close", "data: x\n\ndata: y", []ev{{"", "x"}, {"", "y"}}},
		{"trailing CR at close", "data: x\r", []ev{{"", "x"}}},
		{"blank lines", "\n\n\r\n\ndata: x\n\n\n\n", []ev{{"", "x"}}},
		{"colon in data", "data: {\"a\":\"b:c\"}\n\n", []ev{{"", `{"a":"b:c"}`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			splits := map[string]func(string) []string{
				"whole": func(s string) []string { return []string{s} },
				"bytes": func(s string) []string { return strings.Split(s, "") },
				"random": func(s string) []string {
					r := rand.New(rand.NewPCG(uint64(len(s)), 3))
					var out []string
					for len(s) > 0 {
						n := min(1+r.IntN(5), len(s))
						out = append(out, s[:n])
						s = s[n:]
					}
					return out
				},
			}
			for how, split := range splits {
				if got := parseAll(tc.in, split); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: got %q, want %q", how, got, tc.want)
				}
			}
			var got []ev
			for e := range Events([]byte(tc.in)) {
				got = append(got, ev{e.Name, string(e.Data)})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Events: got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParserCRWaitsForLF(t *testing.T) {
	var p Parser
	p.Feed([]byte("data: x\r"))
	if _, ok := p.Next(); ok {
		t.Fatal("event before its end")
	}
	p.Feed([]byte("\n\r"))
	if _, ok := p.Next(); ok {
		t.Fatal("dispatched on a CR that may start CRLF")
	}
	p.Feed([]byte("\n"))
	if e, ok := p.Next(); !ok || string(e.Data) != "x" {
		t.Fatalf("got %q %v", e.Data, ok)
	}
	if _, ok := p.Next(); ok {
		t.Fatal("spurious event")
	}
}

func TestParserReset(t *testing.T) {
	var p Parser
	p.Feed([]byte("event: a\ndata: half"))
	p.Next()
	p.Reset()
	p.Feed([]byte("data: new\n\n"))
	if e, ok := p.Next(); !ok || e.Name != "" || string(e.Data) != "new" {
		t.Fatalf("after Reset: %q %q %v", e.Name, e.Data, ok)
	}
}

func TestAppendEvent(t *testing.T) {
	var b []byte
	b = AppendEvent(b, "", []byte(`{"a":1}`))
	b = AppendEvent(b, "response.created", []byte("line1\nline2"))
	b = AppendEvent(b, "", nil)
	want := "data: {\"a\":1}\n\nevent: response.created\ndata: line1\ndata: line2\n\ndata: \n\n"
	if string(b) != want {
		t.Fatalf("got %q", b)
	}
	got := parseAll(string(b), func(s string) []string { return []string{s} })
	if !reflect.DeepEqual(got, []ev{{"", `{"a":1}`}, {"response.created", "line1\nline2"}, {"", ""}}) {
		t.Errorf("round trip: %q", got)
	}
}

// openAIStream returns a chat stream as OpenAI sends it, with n content chunks.
func openAIStream(n int) []byte {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"tok%d "},"logprobs":null,"finish_reason":null}]}`+"\n\n", i)
	}
	b.WriteString("data: [DONE]\n\n")
	return []byte(b.String())
}

func TestParserSteadyStateAllocs(t *testing.T) {
	stream := openAIStream(64)
	var p Parser
	run := func() {
		p.Reset()
		// Feed in network-sized pieces that cut events anywhere.
		for s := stream; len(s) > 0; {
			n := min(97, len(s))
			p.Feed(s[:n])
			s = s[n:]
			for {
				if _, ok := p.Next(); !ok {
					break
				}
			}
		}
	}
	run() // grow the buffers once
	if allocs := testing.AllocsPerRun(20, run); allocs != 0 {
		t.Errorf("%v allocations per stream", allocs)
	}
}

func BenchmarkParser(b *testing.B) {
	stream := openAIStream(256)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	var p Parser
	for b.Loop() {
		p.Reset()
		for s := stream; len(s) > 0; {
			n := min(1400, len(s))
			p.Feed(s[:n])
			s = s[n:]
			for {
				if _, ok := p.Next(); !ok {
					break
				}
			}
		}
	}
}

// FuzzSSE checks that the parser finds the same events however the input is cut.
func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: {\"id\":\"chatcmpl-1\",\"choices\":[]}\n\ndata: [DONE]\n\n"), uint8(7))
	f.Add([]byte("event: response.created\ndata: {\"type\":\"response.created\"}\n\n"), uint8(1))
	f.Add([]byte("\xEF\xBB\xBFdata: a\ndata: b\n\n: comment\n\n"), uint8(3))
	f.Add([]byte("event: a\r\ndata: 1\r\rdata:x\n: c\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		var whole []ev
		for e := range Events(in) {
			whole = append(whole, ev{e.Name, string(e.Data)})
		}
		step := int(cut) + 1
		got := parseAll(string(in), func(s string) []string {
			var out []string
			for len(s) > 0 {
				n := min(step, len(s))
				out = append(out, s[:n])
				s = s[n:]
			}
			return out
		})
		if !reflect.DeepEqual(got, whole) {
			t.Fatalf("cut every %d: %q, whole: %q", step, got, whole)
		}
	})
}
