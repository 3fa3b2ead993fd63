package sse

import (
	"bytes"
	"iter"
)

// Event is one server-sent event.
type Event struct {
	// Name is the event type from the "event:" field; "" when there was none (the
	// default "message" type, which is what chat completions send).
	Name string
	// Data is the event's data, its "data:" lines joined by "\n". It aliases the
	// parser's buffer: it is valid until the next call to Next or Feed.
	Data []byte
}

// Parser reads server-sent events incrementally, as the bytes arrive, following the
// WHATWG event-stream rules: lines end in "\n", "\r\n" or "\r", a blank line ends an
// event, lines starting with ':' are comments, a single space after the field's colon
// is dropped, several data lines are joined with "\n", and an event without data is
// not dispatched. A leading byte-order mark is skipped.
//
// It is built for the live streaming path: an event's Data points into the parser's
// own buffer whenever it has a single data line (always, on OpenAI streams), known
// event names are interned, and the buffer is reused, so steady-state parsing does not
// allocate. The zero value is ready to use.
type Parser struct {
	buf     []byte
	ev      int  // start of the event being read, in buf
	pos     int  // start of the next unread line, in buf
	eof     bool // Close was called
	started bool // the byte-order mark has been dealt with

	// The event being read. Spans are relative to ev, so that compacting the buffer
	// does not move them.
	name    [2]int // span of the last event field's value; name[0] < 0 means none
	data    [][2]int
	scratch []byte // joined data of a multi-line event
}

// Feed appends bytes read from the stream. The parser copies them.
func (p *Parser) Feed(b []byte) {
	if p.ev > 0 && (p.ev == len(p.buf) || len(p.buf)+len(b) > cap(p.buf)) {
		// Drop what has been dispatched before growing the buffer.
		n := copy(p.buf, p.buf[p.ev:])
		p.buf = p.buf[:n]
		p.pos -= p.ev
		p.ev = 0
	}
	p.buf = append(p.buf, b...)
}

// Close tells the parser that the stream has ended. An event that was not followed by
// a blank line is then still dispatched (the WHATWG rules would drop it; being lenient
// costs nothing when the stream is known to be complete).
func (p *Parser) Close() { p.eof = true }

// Reset empties the parser for a new stream, keeping its buffer.
func (p *Parser) Reset() {
	*p = Parser{buf: p.buf[:0], data: p.data[:0], scratch: p.scratch[:0]}
}

// Next returns the next complete event, and false when more input is needed (or, after
// Close, when the stream is exhausted).
func (p *Parser) Next() (Event, bool) {
	if !p.started {
		if !p.skipBOM() {
			return Event{}, false
		}
	}
	if p.pos == p.ev {
		p.name[0] = -1
		p.data = p.data[:0]
	}
	for {
		line, next, ok := p.line()
		if !ok {
			if p.eof && p.pos == len(p.buf) && len(p.data) > 0 {
				return p.dispatch(len(p.buf)), true
			}
			return Event{}, false
		}
		lineStart := p.pos
		p.pos = next
		if len(line) == 0 {
			if len(p.data) > 0 {
				return p.dispatch(next), true
			}
			// An event without data is dropped: start over after the blank line.
			p.ev = next
			p.name[0] = -1
			continue
		}
		if line[0] == ':' {
			continue
		}
		fieldName, value := line, line[len(line):]
		valueStart := lineStart + len(line)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			fieldName, value = line[:i], line[i+1:]
			valueStart = lineStart + i + 1
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
				valueStart++
			}
		}
		span := [2]int{valueStart - p.ev, valueStart + len(value) - p.ev}
		switch string(fieldName) {
		case "data":
			p.data = append(p.data, span)
		case "event":
			p.name = span
		}
		// id and retry do not matter to the relay; other fields are ignored.
	}
}

// skipBOM drops a leading UTF-8 byte-order mark, and reports false when there are too
// few bytes yet to tell.
func (p *Parser) skipBOM() bool {
	const bom = "\xEF\xBB\xBF"
	rest := p.buf[p.pos:]
	if len(rest) < len(bom) && !p.eof && bytes.HasPrefix([]byte(bom), rest) {
		return false
	}
	if bytes.HasPrefix(rest, []byte(bom)) {
		p.pos += len(bom)
		p.ev = p.pos
	}
	p.started = true
	return true
}

// line returns the line at p.pos without its terminator, and the start of
// the next. It finds the terminators with IndexByte rather than through
// lineEnd, which EventLen uses: this is the live path's inner loop, and
// FuzzEventLen checks that the two agree.
func (p *Parser) line() (line []byte, next int, ok bool) {
	rest := p.buf[p.pos:]
	lf := bytes.IndexByte(rest, '\n')
	crSearch := rest
	if lf >= 0 {
		crSearch = rest[:lf]
	}
	if cr := bytes.IndexByte(crSearch, '\r'); cr >= 0 {
		if cr+1 == len(rest) && !p.eof {
			return nil, 0, false // "\r" or "\r\n"? Wait for the next byte.
		}
		if cr+1 < len(rest) && rest[cr+1] == '\n' {
			return rest[:cr], p.pos + cr + 2, true
		}
		return rest[:cr], p.pos + cr + 1, true
	}
	if lf >= 0 {
		return rest[:lf], p.pos + lf + 1, true
	}
	if p.eof && len(rest) > 0 {
		return rest, len(p.buf), true
	}
	return nil, 0, false
}

// EventLen returns the length of the first complete event in b, through
// the blank line that ends it, or -1 when b holds none yet: the raw framing
// of a stream passed on event by event. The rules are the Parser's: lines
// end in LF, CRLF or a lone CR, and an event ends at the first line
// terminator followed at once by another. A CR at the very end of b may be
// half of a CRLF, so it waits for the next byte.
func EventLen(b []byte) int {
	for i := 0; i < len(b); {
		k := bytes.IndexAny(b[i:], "\r\n")
		if k < 0 {
			return -1
		}
		j, ok := lineEnd(b, i+k)
		if !ok {
			return -1
		}
		if j < len(b) && (b[j] == '\n' || b[j] == '\r') {
			end, ok := lineEnd(b, j)
			if !ok {
				return -1
			}
			return end
		}
		i = j
	}
	return -1
}

// lineEnd is the index after the line terminator at b[i] (LF, CR or CRLF),
// and false when b ends in a CR that a LF may still follow.
func lineEnd(b []byte, i int) (int, bool) {
	if b[i] == '\n' {
		return i + 1, true
	}
	if i+1 == len(b) {
		return 0, false
	}
	if b[i+1] == '\n' {
		return i + 2, true
	}
	return i + 1, true
}

// dispatch returns the event read so far and starts the next one at next.
func (p *Parser) dispatch(next int) Event {
	ev := Event{}
	base := p.buf[p.ev:]
	if p.name[0] >= 0 {
		ev.Name = internName(base[p.name[0]:p.name[1]])
	}
	if len(p.data) == 1 {
		d := p.data[0]
		ev.Data = base[d[0]:d[1]:d[1]]
	} else {
		p.scratch = p.scratch[:0]
		for i, d := range p.data {
			if i > 0 {
				p.scratch = append(p.scratch, '\n')
			}
			p.scratch = append(p.scratch, base[d[0]:d[1]]...)
		}
		ev.Data = p.scratch
	}
	p.ev, p.pos = next, next
	p.name[0] = -1
	p.data = p.data[:0]
	return ev
}

// internName returns the event names OpenAI sends without allocating.
func internName(b []byte) string {
	if s, ok := eventNames[string(b)]; ok {
		return s
	}
	return string(b)
}

var eventNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{
		"message", "error", "done",
		"response.created", "response.in_progress", "response.completed",
		"response.incomplete", "response.failed", "response.queued",
		"response.output_item.added", "response.output_item.done",
		"response.content_part.added", "response.content_part.done",
		"response.output_text.delta", "response.output_text.done",
		"response.output_text.annotation.added",
		"response.refusal.delta", "response.refusal.done",
		"response.function_call_arguments.delta", "response.function_call_arguments.done",
		"response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
		"response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
		"response.reasoning_text.delta", "response.reasoning_text.done",
	} {
		m[n] = n
	}
	return m
}()

// Events returns the events of a complete stream, such as a stored one. It reads sse
// in place, without copying it; each Event is valid until the next iteration.
func Events(sse []byte) iter.Seq[Event] {
	return func(yield func(Event) bool) {
		// A full slice expression, so that the parser can never append into the
		// caller's spare capacity.
		p := Parser{buf: sse[:len(sse):len(sse)], eof: true}
		for {
			ev, ok := p.Next()
			if !ok || !yield(ev) {
				return
			}
		}
	}
}

// AppendEvent appends one server-sent event to dst: an "event:" line when name is not
// empty, one "data:" line per line of data, and the blank line that ends the event.
func AppendEvent(dst []byte, name string, data []byte) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexByte(data, '\n')
		line := data
		if i >= 0 {
			line = data[:i]
		}
		dst = append(dst, "data: "...)
		dst = append(dst, line...)
		dst = append(dst, '\n')
		if i < 0 {
			break
		}
		data = data[i+1:]
	}
	return append(dst, '\n')
}
