package openairelay

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
)

// The events of a WebSocket session the relay reads. Every message of both
// APIs is a JSON object with a "type" (the Realtime API reference's client
// and server events; the Responses API's WebSocket mode carries the events
// of its HTTP stream, and takes {"type":"response.create", …the create
// body…}). The relay reads only the members it routes and accounts by, and
// passes every message on as it came, but for the credentials it scrubs.

// eventHead is the envelope of an event: its type and, for the events the
// relay accounts by, the ids that tie a response to the event that asked
// for it.
type eventHead struct {
	typ     string
	eventID string // a client event's event_id
	// streamID is a Responses socket's response.create stream_id: the
	// lane whose events (and errors) carry it back, several responses
	// being in flight on one socket.
	streamID string
}

// readEventHead reads an event's type and event_id; ok is false for a
// message that is not a JSON object with a string type. The message is not
// validated (audio appends are large, and the upstream refuses a malformed
// one itself): what the relay acts on is validated where it acts.
func readEventHead(msg []byte) (eventHead, bool) {
	var h eventHead
	if len(msg) == 0 || msg[0] != '{' && !bytes.HasPrefix(bytes.TrimLeft(msg, " \t\r\n"), []byte("{")) {
		return h, false
	}
	valid := eachMember(msg, func(key []byte, start, end int) {
		switch string(key) {
		case "type":
			h.typ = jsonStringValue(msg[start:end])
		case "event_id":
			h.eventID = jsonStringValue(msg[start:end])
		case "stream_id":
			h.streamID = jsonStringValue(msg[start:end])
		}
	})
	return h, valid && h.typ != ""
}

// sessionModel is the model a Realtime session.update names
// (session.model), if any.
func sessionModel(msg []byte) (string, bool) {
	sess, ok := member(msg, "session")
	if !ok || len(sess) == 0 || sess[0] != '{' {
		return "", false
	}
	raw, ok := member(sess, "model")
	if !ok {
		return "", false
	}
	return jsonStringValue(raw), true
}

// responseOf is the response object a response.* server event carries.
func responseOf(msg []byte) []byte {
	raw, ok := member(msg, "response")
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	return raw
}

// realtimeAllowance is the output allowance of a Realtime response.create:
// response.max_output_tokens (GA) or max_response_output_tokens (beta), an
// integer or "inf"; 0 when none is set.
func realtimeAllowance(msg []byte) int64 {
	resp := responseOf(msg)
	if resp == nil {
		return 0
	}
	for _, name := range [...]string{"max_output_tokens", "max_response_output_tokens"} {
		if raw, ok := member(resp, name); ok {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n > 0 {
				return min(n, maxTokenCount)
			}
		}
	}
	return 0
}

// errorEventOf is the event_id an error server event names: the client
// event it refuses (error.event_id), if any.
func errorEventOf(msg []byte) string {
	e, ok := member(msg, "error")
	if !ok || len(e) == 0 || e[0] != '{' {
		return ""
	}
	raw, _ := member(e, "event_id")
	return jsonStringValue(raw)
}

// wsErrorEvent is the error event the relay sends a client in place of an
// HTTP answer: the Realtime API's shape ({"type":"error","event_id",
// "error":{type,code,message,param,event_id}}, clientEventID naming the
// client event refused) or the Responses WebSocket mode's
// ({"type":"error","status",…,"error":{…},"stream_id"}, clientEventID being
// the refused response.create's stream_id, so that the SDK's lane for it
// gets the error: openai-go ResponsesServerEventResponseWsError.StreamID).
func wsErrorEvent(realtime bool, aerr *apiError, clientEventID string) []byte {
	type rtError struct {
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
		EventID *string `json:"event_id"`
	}
	e := rtError{Type: aerr.Type, Message: aerr.Message}
	if aerr.Code != "" {
		e.Code = &aerr.Code
	}
	if aerr.Param != "" {
		e.Param = &aerr.Param
	}
	var b []byte
	if realtime {
		if clientEventID != "" {
			e.EventID = &clientEventID
		}
		b, _ = json.Marshal(struct {
			Type    string  `json:"type"`
			EventID string  `json:"event_id"`
			Error   rtError `json:"error"`
		}{"error", "event_relay_" + strconv.FormatInt(wsEventSeq.Add(1), 36), e})
		return b
	}
	b, _ = json.Marshal(struct {
		Type     string  `json:"type"`
		Status   int     `json:"status"`
		Error    rtError `json:"error"`
		StreamID string  `json:"stream_id,omitempty"`
	}{"error", aerr.Status, e, clientEventID})
	return b
}

// wsErrorFromAnswer turns the relay's HTTP answer to a failed attempt (an
// OpenAI error body and its status) into an error event.
func wsErrorFromAnswer(realtime bool, status int, body []byte, clientEventID string) []byte {
	aerr := &apiError{Status: status, Type: "server_error", Message: "The upstream refused the request."}
	if e, ok := member(body, "error"); ok && len(e) > 0 && e[0] == '{' {
		if m := stringMember(e, "message"); m != "" {
			aerr.Message = m
		}
		if t := stringMember(e, "type"); t != "" {
			aerr.Type = t
		}
		aerr.Code = stringMember(e, "code")
		aerr.Param = stringMember(e, "param")
	}
	return wsErrorEvent(realtime, aerr, clientEventID)
}

// eachArrayObject calls fn with each object element of a JSON array.
func eachArrayObject(arr []byte, fn func(obj []byte)) {
	i := jsonscan.Space(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	i = jsonscan.Space(arr, i+1)
	for i < len(arr) && arr[i] != ']' {
		start, end, err := jsonscan.Value(arr, i)
		if err != nil {
			return
		}
		if arr[start] == '{' {
			fn(arr[start:end])
		}
		i = jsonscan.Space(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = jsonscan.Space(arr, i+1)
		}
	}
}
