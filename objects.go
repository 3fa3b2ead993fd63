package openairelay

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyrelay/openairelay/internal/jsonscan"
)

// Stored objects and who owns them.
//
// Whatever the upstream stores (files, responses, conversations, batches,
// vector stores, uploads, fine-tuning jobs, assistants, threads, stored chat
// completions, containers, evals) is stored for the organisation of the key
// that created it, which every client of the relay shares. The relay keeps a
// record of each object it saw created: the key that created it (a request
// that names the object must go to that key's organisation, so it is pinned
// to it) and the client whose request created it (the owner). Before the
// cache and before any upstream call, a request that names an object owned
// by another client, or one the relay never saw created, gets the API's 404
// for it; `objects shared` (for the relay or one client) lets a client name
// objects the relay never saw created, such as those made before the relay
// was put in front of the organisation, but never another client's. Lists of
// objects show a client its own (and, when shared, those of no known owner).
//
// Objects are named by their top-level id only: in a path the first segment
// that is such an id (the object the path is about; what follows, such as
// the messages of a thread or the files of a vector store, lives inside it),
// and in a JSON body the values of the members that name objects (idFields).

// objectKind is a kind of top-level stored object, known by its id prefix.
type objectKind struct {
	prefix string
	name   string // as in the API's 404: "No such <name> object: <id>"
	// volume marks kinds created by the bulk of the traffic (every
	// Responses call stores one): they are remembered apart, so that they
	// cannot push the records of files and the like out.
	volume bool
}

// ownedPrefixes are the kinds of objects whose ids the relay records and
// checks. Ids of objects nested in another (messages, runs, steps, parts,
// container files, eval runs) are covered by their parent's.
var ownedPrefixes = []objectKind{
	{prefix: "file-", name: "File"},
	{prefix: "resp_", name: "Response", volume: true},
	{prefix: "conv_", name: "Conversation"},
	{prefix: "batch_", name: "Batch"},
	{prefix: "vs_", name: "Vector store"},
	{prefix: "ftjob-", name: "Fine-tuning job"},
	{prefix: "asst_", name: "Assistant"},
	{prefix: "thread_", name: "Thread"},
	{prefix: "upload_", name: "Upload"},
	{prefix: "cntr_", name: "Container"},
	{prefix: "cont_", name: "Container"},
	{prefix: "eval_", name: "Eval"},
}

// chatCompletionKind is a stored chat completion (`store: true`). Chat
// completion ids are checked only on /chat/completions/{id}: elsewhere they
// are the ids of answers nobody stored.
var chatCompletionKind = &objectKind{prefix: "chatcmpl-", name: "Chat completion", volume: true}

// maxIDLength bounds what is taken for an object id.
const maxIDLength = 128

// kindOf is the kind of a stored object's id, nil if s is not one.
func kindOf(s string) *objectKind {
	if len(s) > maxIDLength {
		return nil
	}
	for i := range ownedPrefixes {
		k := &ownedPrefixes[i]
		if strings.HasPrefix(s, k.prefix) && len(s) > len(k.prefix) && idChars(s[len(k.prefix):]) {
			return k
		}
	}
	return nil
}

// ownedID reports whether s is the id of an object the relay records.
func ownedID(s string) bool { return kindOf(s) != nil }

// idChars reports whether s has only the characters of the API's ids.
func idChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ---- the records ----

// objectRecord is what the relay knows of one stored object.
type objectRecord struct {
	key     string // the pool id of the key that created it
	owner   string // the stable id of the client that created it
	created int64  // unix seconds
	ring    uint8
	slot    int32
	// models are the models a batch input file names (see batches.go);
	// nil when the relay did not read them. Not saved across restarts.
	models []string
}

// maxObjects bounds the records of each ring (the volume kinds, and the
// others): the most recent are kept. A record costs about 150 bytes.
const maxObjects = 1 << 16

type objectTable struct {
	mu    sync.RWMutex
	byID  map[string]objectRecord
	rings [2]idRing
}

// idRing is the ids of one ring in the order they were recorded.
type idRing struct {
	ids  []string // "" where a record was removed
	next int      // the oldest, once the ring is full
	size int
}

func newObjectTable(size int) *objectTable {
	t := &objectTable{byID: make(map[string]objectRecord)}
	t.rings[0].size, t.rings[1].size = size, size
	return t
}

// remember records a new object. An id already recorded keeps its record:
// the first key and client that made it are its creators, whatever answer
// names it again.
func (t *objectTable) remember(id, key, owner string, created time.Time) {
	k := kindOf(id)
	if k == nil && strings.HasPrefix(id, chatCompletionKind.prefix) && len(id) <= maxIDLength && idChars(id) {
		k = chatCompletionKind
	}
	if k == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byID[id]; ok {
		return
	}
	ring := uint8(0)
	if k.volume {
		ring = 1
	}
	r := &t.rings[ring]
	var slot int
	if len(r.ids) < r.size {
		r.ids = append(r.ids, id)
		slot = len(r.ids) - 1
	} else {
		slot = r.next
		if old := r.ids[slot]; old != "" {
			if rec, ok := t.byID[old]; ok && rec.ring == ring && int(rec.slot) == slot {
				delete(t.byID, old)
			}
		}
		r.ids[slot] = id
		r.next = (r.next + 1) % r.size
	}
	t.byID[id] = objectRecord{key: key, owner: owner, created: created.Unix(), ring: ring, slot: int32(slot)}
}

// setModels records the models a batch input file names.
func (t *objectTable) setModels(id string, models []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rec, ok := t.byID[id]; ok {
		rec.models = models
		t.byID[id] = rec
	}
}

// forget removes the record of a deleted object.
func (t *objectTable) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec, ok := t.byID[id]
	if !ok {
		return
	}
	t.rings[rec.ring].ids[rec.slot] = ""
	delete(t.byID, id)
}

func (t *objectTable) get(id string) (objectRecord, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rec, ok := t.byID[id]
	return rec, ok
}

func (t *objectTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// objectsSnapshot is the records in the restart snapshot. Keys and owners
// are written once each and items refer to them by index, so that a record
// costs a short line.
type objectsSnapshot struct {
	Keys   []string `json:"keys"`   // pool ids of the creating keys
	Owners []string `json:"owners"` // stable ids of the owning clients
	// Items are "<id> <key index> <owner index> <created, unix seconds>",
	// oldest first.
	Items []string `json:"items"`
}

// snapshot returns the records, nil when there are none.
func (t *objectTable) snapshot() *objectsSnapshot {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.byID) == 0 {
		return nil
	}
	s := &objectsSnapshot{Items: make([]string, 0, len(t.byID))}
	keys, owners := map[string]int{}, map[string]int{}
	index := func(m map[string]int, list *[]string, v string) int {
		i, ok := m[v]
		if !ok {
			i = len(*list)
			m[v] = i
			*list = append(*list, v)
		}
		return i
	}
	for ri := range t.rings {
		r := &t.rings[ri]
		n := len(r.ids)
		for j := range n {
			id := r.ids[(r.next+j)%n]
			rec, ok := t.byID[id]
			if id == "" || !ok {
				continue
			}
			s.Items = append(s.Items, id+" "+strconv.Itoa(index(keys, &s.Keys, rec.key))+" "+
				strconv.Itoa(index(owners, &s.Owners, rec.owner))+" "+strconv.FormatInt(rec.created, 10))
		}
	}
	return s
}

// restore records what a snapshot holds, oldest first; malformed items are
// skipped.
func (t *objectTable) restore(s *objectsSnapshot) {
	if s == nil {
		return
	}
	for _, item := range s.Items {
		f := strings.Fields(item)
		if len(f) != 4 {
			continue
		}
		ki, err1 := strconv.Atoi(f[1])
		oi, err2 := strconv.Atoi(f[2])
		created, err3 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || ki < 0 || ki >= len(s.Keys) || oi < 0 || oi >= len(s.Owners) {
			continue
		}
		t.remember(f[0], s.Keys[ki], s.Owners[oi], time.Unix(created, 0))
	}
}

// ---- clients ----

// Values of the objects option.
const (
	objectsOwned  = "owned"
	objectsShared = "shared"
)

// provisionObjects checks the objects options and gives every client its
// stable id: the relay's key pool (a hash of the sorted pool ids of its
// keys) and the client's name. Two sites with a client of the same name but
// other keys have two clients; a reload that keeps the keys and the name
// keeps the client's objects. It runs once the keys are provisioned.
func (rl *Relay) provisionObjects() error {
	if err := checkObjectsOption(rl.Objects); err != nil {
		return err
	}
	for _, c := range rl.Clients {
		if err := checkObjectsOption(c.Objects); err != nil {
			return fmt.Errorf("client %s: %v", c.Name, err)
		}
		c.ownerID = ownerID(rl.poolHash, c.Name)
		c.sharedObjects = c.Objects == objectsShared || (c.Objects == "" && rl.Objects == objectsShared)
	}
	return nil
}

// hashKeyPool names the relay's key pool (a hash of the sorted pool ids of
// its keys), the part of every client's stable id that tells two sites'
// clients of the same name apart. It runs once the keys are provisioned.
func (rl *Relay) hashKeyPool() {
	ids := make([]string, 0, len(rl.keys))
	for _, k := range rl.keys {
		ids = append(ids, k.poolID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	rl.poolHash = hex.EncodeToString(sum[:12])
}

func checkObjectsOption(v string) error {
	if v != "" && v != objectsOwned && v != objectsShared {
		return fmt.Errorf("objects must be %s or %s, not %q", objectsOwned, objectsShared, v)
	}
	return nil
}

func ownerID(poolHash, name string) string { return "client:" + name + "@" + poolHash }

// ownerOf is the stable id of a client of this relay. The anonymous client
// (client_auth none) is one for every relay, so its id is made here.
func (rl *Relay) ownerOf(c *Client) string {
	if c.ownerID != "" {
		return c.ownerID
	}
	return ownerID(rl.poolHash, c.Name)
}

// sharesObjects reports whether the client may name objects the relay never
// saw created.
func (rl *Relay) sharesObjects(c *Client) bool {
	if c.ownerID != "" {
		return c.sharedObjects
	}
	return rl.Objects == objectsShared
}

// may reports whether a client may use an object: its own, or, for a client
// with shared objects, one of no known owner.
func (rl *Relay) may(owner string, shared bool, id string) (objectRecord, bool) {
	rec, known := rl.state.objects().get(id)
	if known {
		return rec, rec.owner == owner
	}
	return rec, shared
}

// ---- the objects a request names ----

// objectRef is an object a request names.
type objectRef struct {
	id    string
	kind  *objectKind
	field string // the body member that names it; "" for the path
}

// idFields are the JSON members whose string values (or arrays of strings)
// name stored objects, wherever they are in a body. Under "conversation"
// an object's "id" does too; below "metadata" nothing counts (it is the
// client's own data).
var idFields = map[string]bool{
	"previous_response_id": true, "conversation": true, "conversation_id": true,
	"file_id": true, "file_ids": true, "input_file_id": true, "training_file": true, "validation_file": true,
	"vector_store_id": true, "vector_store_ids": true, "assistant_id": true, "thread_id": true,
	"container": true, "container_id": true, "response_id": true, "batch_id": true, "upload_id": true, "eval_id": true,
}

// namedObjects calls fn with each stored object the request names, until
// fn returns false: the object of its path, then those of its body.
func (ar *apiRequest) namedObjects(fn func(objectRef) bool) {
	if ref, ok := pathObject(ar.endpoint); ok && !fn(ref) {
		return
	}
	stop := false
	each := func(field, id string) {
		if stop {
			return
		}
		if k := kindOf(id); k != nil {
			stop = !fn(objectRef{id: id, kind: k, field: field})
		}
	}
	switch {
	case namesNoObjects[ar.endpoint]:
		// The bulk of the traffic: bodies that never name a stored object
		// are not scanned again.
	case ar.kind == bodyJSON || (ar.kind == bodyOther && validJSONBody(ar.body)):
		scanBodyIDs(ar.body, idFields, true, each)
	case ar.kind == bodyMultipart:
		multipartIDs(ar.body, ar.boundary, each)
	}
}

// namesNoObjects are the endpoints whose bodies name no stored object
// (chat completions do: a file content part's file_id).
var namesNoObjects = map[string]bool{
	"embeddings": true, "completions": true, "moderations": true, "audio/speech": true, "images/generations": true,
}

// pathSegments are the non-empty segments of an endpoint.
func pathSegments(endpoint string) []string {
	return strings.FieldsFunc(endpoint, func(r rune) bool { return r == '/' })
}

// pathObject is the object a path is about: its first segment that is an
// object id, or the id of /chat/completions/{id}.
func pathObject(endpoint string) (objectRef, bool) {
	segs := pathSegments(endpoint)
	if len(segs) >= 3 && segs[0] == "chat" && segs[1] == "completions" {
		id := segs[2]
		if strings.HasPrefix(id, chatCompletionKind.prefix) && len(id) > len(chatCompletionKind.prefix) &&
			len(id) <= maxIDLength && idChars(id) {
			return objectRef{id: id, kind: chatCompletionKind}, true
		}
		return objectRef{}, false
	}
	for _, s := range segs {
		if k := kindOf(s); k != nil {
			return objectRef{id: s, kind: k}, true
		}
	}
	return objectRef{}, false
}

func validJSONBody(body []byte) bool {
	i := jsonscan.Space(body, 0)
	return i < len(body) && (body[i] == '{' || body[i] == '[') && json.Valid(body)
}

// scanBodyIDs calls fn with the field and value of every string that names
// an object in a JSON document: the values of the members in fields (see
// idFields), and with nestedIDs those of "id" members below the top level,
// in one pass over the bytes. Member names match without regard to case, as
// some servers match them.
func scanBodyIDs(data []byte, fields map[string]bool, nestedIDs bool, fn func(field, id string)) {
	type frame struct {
		obj   bool
		key   string // objects: the canonical name of the member being read ("" if of no interest)
		field string // arrays: the id field whose elements name objects
		idObj string // objects: the field whose value this object is, when its "id" names an object
	}
	stack := make([]frame, 0, 16)
	expectKey := false
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case '{', '[':
			f := frame{obj: c == '{'}
			if n := len(stack); n > 0 && stack[n-1].obj {
				switch parent := stack[n-1].key; {
				case parent == "metadata":
					i = jsonscan.Skip(data, i)
					continue
				case parent == "conversation" && fields[parent]:
					f.idObj = parent
				case fields[parent]:
					f.field = parent
				}
			}
			stack = append(stack, f)
			expectKey = f.obj
			i++
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			expectKey = false
			i++
		case ',':
			if n := len(stack); n > 0 && stack[n-1].obj {
				expectKey = true
			}
			i++
		case '"':
			end, _ := jsonscan.String(data, i)
			n := len(stack)
			if n == 0 {
				return
			}
			top := &stack[n-1]
			switch {
			case top.obj && expectKey:
				top.key = canonicalField(data[i+1 : max(end-1, i+1)])
				expectKey = false
			case top.obj:
				switch {
				case fields[top.key]:
					if s, ok := idString(data[i:end]); ok {
						fn(top.key, s)
					}
				case top.key == "id" && (top.idObj != "" || (n > 1 && nestedIDs)):
					if s, ok := idString(data[i:end]); ok {
						fn(cmp.Or(top.idObj, "id"), s)
					}
				}
			case top.field != "":
				if s, ok := idString(data[i:end]); ok {
					fn(top.field, s)
				}
			}
			i = end
		default:
			i++
		}
	}
}

// fieldNames are the member names scanBodyIDs looks at.
var fieldNames = func() map[string]string {
	m := map[string]string{"id": "id", "metadata": "metadata"}
	for f := range idFields {
		m[f] = f
	}
	for f := range derivedFields {
		m[f] = f
	}
	return m
}()

// canonicalField is the name of a member of interest to scanBodyIDs,
// lower-cased ("" for any other member).
func canonicalField(raw []byte) string {
	if f, ok := fieldNames[string(raw)]; ok {
		return f
	}
	if len(raw) > 64 {
		return ""
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s) != nil {
			return ""
		}
		raw = []byte(s)
	}
	return fieldNames[strings.ToLower(string(raw))]
}

// idString unquotes a JSON string that may be an object id.
func idString(quoted []byte) (string, bool) {
	if len(quoted) < 2 || len(quoted) > 2*maxIDLength+2 {
		return "", false
	}
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return "", false
	}
	return s, true
}

// multipartIDs calls fn with the values of a multipart body's form fields
// that name objects.
func multipartIDs(body []byte, boundary string, fn func(field, id string)) {
	if boundary == "" {
		return
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err != nil {
			return
		}
		name := strings.ToLower(strings.TrimSuffix(part.FormName(), "[]"))
		if part.FileName() != "" || !idFields[name] {
			continue
		}
		v, err := io.ReadAll(io.LimitReader(part, maxIDLength+1))
		if err == nil {
			fn(name, string(v))
		}
	}
}

// ---- at request time ----

// checkObjects refuses a request that names an object its client may not
// use, with the API's own answer for an object that does not exist, and
// pins a request that names a known object to the key that created it. It
// runs before the cache and before any upstream call.
func (pr *proxyRequest) checkObjects() *apiError {
	owner := pr.rl.ownerOf(pr.client)
	shared := pr.rl.sharesObjects(pr.client)
	var refused *apiError
	pin := ""
	pr.api.namedObjects(func(ref objectRef) bool {
		if pr.ownIDs[ref.id] {
			return true // a response of the same WebSocket session
		}
		rec, ok := pr.rl.may(owner, shared, ref.id)
		if !ok {
			refused = errNoSuchObject(ref)
			return false
		}
		if pin == "" {
			pin = rec.key
		}
		return true
	})
	if refused != nil {
		return refused
	}
	pr.pinned = pr.keyByPoolID(pin)
	return nil
}

// errNoSuchObject is the API's answer to a request naming an object that
// does not exist.
func errNoSuchObject(ref objectRef) *apiError {
	if ref.field == "previous_response_id" {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "previous_response_not_found",
			Param: ref.field, Message: "Previous response with id '" + ref.id + "' not found."}
	}
	e := &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: ref.field}
	switch {
	case ref.kind.name == "Response":
		e.Message = "Response with id '" + ref.id + "' not found."
	default:
		e.Message = "No such " + ref.kind.name + " object: " + ref.id
		if e.Param == "" {
			e.Param = "id"
		}
	}
	return e
}

// pinnedKey is the key a request must use because it names an object that
// key's organisation created: the key that created it, if the relay knows
// it, the request may use it and it is not retired. Otherwise the request
// goes where selection sends it.
func (pr *proxyRequest) pinnedKey() *poolKey {
	if pr.pinned == nil {
		// A request that did not go through checkObjects (the relay's own).
		pin := ""
		pr.api.namedObjects(func(ref objectRef) bool {
			if rec, ok := pr.rl.state.objects().get(ref.id); ok {
				pin = rec.key
				return false
			}
			return true
		})
		pr.pinned = pr.keyByPoolID(pin)
	}
	if pr.pinned == noPin || pr.pinned.state.retired() {
		return nil
	}
	return pr.pinned
}

// noPin marks a request found to name no known object.
var noPin = &poolKey{}

func (pr *proxyRequest) keyByPoolID(poolID string) *poolKey {
	if poolID == "" {
		return noPin
	}
	for k := range pr.route.keys() {
		if k.poolID == poolID {
			return k
		}
	}
	return noPin
}

// ---- from answers ----

// createEndpoints are the endpoints whose successful POST answer is a new
// stored object (its id), after their path's segments are joined.
var createEndpoints = map[string]bool{
	"responses": true, "files": true, "batches": true, "vector_stores": true, "fine_tuning/jobs": true,
	"assistants": true, "threads": true, "threads/runs": true, "uploads": true, "conversations": true,
	"containers": true, "evals": true, "chat/completions": true,
}

// derivedFields are the members of answers naming objects the upstream
// made for an object of the client's (the output and error files of a
// batch, the result files of a fine-tuning job, the container of a
// Responses code interpreter, the vector stores made from an assistant's or
// thread's file_ids): they are the client's too.
var derivedFields = map[string]bool{
	"output_file_id": true, "error_file_id": true, "result_files": true,
	"container_id": true, "vector_store_ids": true,
}

// derivingEndpoints are the first path segments of the objects whose
// answers may name derived objects.
var derivingEndpoints = map[string]bool{
	"batches": true, "fine_tuning": true, "responses": true, "assistants": true, "threads": true,
}

// rememberResponse records the objects a successful answer tells of, for
// the key that answered and the request's client: a new object created by a
// POST (its id, from the JSON answer or a Responses stream's
// response.created), and the objects the upstream made for one of the
// client's (derivedFields); and it forgets an object deleted.
func (pr *proxyRequest) rememberResponse(key *poolKey, answer []byte, tap *streamTap) {
	segs := pathSegments(pr.api.endpoint)
	if len(segs) == 0 {
		return
	}
	if pr.req.Method == http.MethodDelete {
		if ref, ok := pathObject(pr.api.endpoint); ok && ref.id == segs[len(segs)-1] {
			pr.rl.state.objects().forget(ref.id)
		}
		return
	}
	owner := pr.rl.ownerOf(pr.client)
	now := time.Now()
	ep := strings.Join(segs, "/")
	if answer != nil && derivingEndpoints[segs[0]] {
		// What the upstream made for an object of the client's (one it
		// creates now, or one it owns) is the client's.
		ref, named := pathObject(pr.api.endpoint)
		rec, known := pr.rl.state.objects().get(ref.id)
		if (pr.req.Method == http.MethodPost && createEndpoints[ep]) || (named && known && rec.owner == owner) {
			pr.rememberDerived(answer, key.poolID, owner, now)
		}
	}
	if pr.req.Method != http.MethodPost {
		return
	}
	if len(segs) == 3 && segs[0] == "uploads" && segs[2] == "complete" && answer != nil {
		// Completing an upload makes its file.
		if f, ok := member(answer, "file"); ok {
			if id := stringMember(f, "id"); id != "" {
				pr.rl.state.objects().remember(id, key.poolID, owner, now)
			}
		}
		return
	}
	if !createEndpoints[ep] || !pr.storesAnswer(ep) {
		return
	}
	id := ""
	switch {
	case tap != nil:
		id = tap.answerID
	case answer != nil:
		id = stringMember(answer, "id")
		if ep == "threads/runs" {
			id = stringMember(answer, "thread_id") // the run's new thread
		}
	}
	if ep == "chat/completions" {
		if strings.HasPrefix(id, chatCompletionKind.prefix) {
			pr.rl.state.objects().remember(id, key.poolID, owner, now)
		}
		return
	}
	if ownedID(id) {
		pr.rl.state.objects().remember(id, key.poolID, owner, now)
		if ep == "files" && pr.api.kind == bodyMultipart {
			if models, ok := batchFileModels(pr.api.body, pr.api.boundary); ok {
				pr.rl.state.objects().setModels(id, models)
			}
		}
	}
}

// storesAnswer reports whether a POST to a creating endpoint stores its
// answer: chat completions only with "store": true, responses unless
// "store": false.
func (pr *proxyRequest) storesAnswer(ep string) bool {
	if pr.api.kind != bodyJSON {
		return ep != "chat/completions"
	}
	store, ok := member(pr.api.body, "store")
	switch ep {
	case "chat/completions":
		return ok && bytes.Equal(store, []byte("true"))
	case "responses":
		return !ok || !bytes.Equal(store, []byte("false"))
	}
	return true
}

// rememberDerived records the objects an answer names in derivedFields as
// the client's. Those already recorded keep their owner, and those the
// request named are references the answer echoes (a Responses answer
// repeats its tools' vector_store_ids), not objects made for it.
func (pr *proxyRequest) rememberDerived(answer []byte, key, owner string, now time.Time) {
	var named map[string]bool
	scanBodyIDs(answer, derivedFields, false, func(_, id string) {
		if kindOf(id) == nil {
			return
		}
		if named == nil {
			named = map[string]bool{}
			pr.api.namedObjects(func(ref objectRef) bool {
				named[ref.id] = true
				return true
			})
		}
		if !named[id] {
			pr.rl.state.objects().remember(id, key, owner, now)
		}
	})
}

// stringMember is a top-level string member of a JSON object, "" if absent
// or not a string.
func stringMember(obj []byte, name string) string {
	raw, _ := member(obj, name)
	return jsonStringValue(raw)
}

// jsonStringValue is the string a raw JSON value holds, "" when it is not a
// string. One without escapes in valid UTF-8 is its bytes; any other is
// decoded as encoding/json does (invalid UTF-8 becomes U+FFFD).
func jsonStringValue(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// ---- lists ----

// listLimits are an object list's default and largest `limit`.
type listLimits struct{ def, max int }

// ownLists are the list endpoints (GET) answered with the client's own
// objects only.
var ownLists = map[string]listLimits{
	"files":            {10000, 10000},
	"batches":          {20, 100},
	"vector_stores":    {20, 100},
	"fine_tuning/jobs": {20, 100},
	"assistants":       {20, 100},
	"chat/completions": {20, 100},
	"containers":       {20, 100},
	"evals":            {20, 100},
}

// maxListPages bounds the upstream pages read for one list request, and
// maxListPage the bytes of one.
const (
	maxListPages = 10
	maxListPage  = 32 << 20
)

// ownList is the list endpoint a request is for, if it is one whose answer
// is filtered.
func (pr *proxyRequest) ownList() (listLimits, bool) {
	if pr.req.Method != http.MethodGet {
		return listLimits{}, false
	}
	lim, ok := ownLists[strings.Join(pathSegments(pr.api.endpoint), "/")]
	return lim, ok
}

// listsOwnObjects reports whether the answer to the request is a list to be
// cut down to the client's objects.
func (pr *proxyRequest) listsOwnObjects() bool {
	_, ok := pr.ownList()
	return ok
}

// respondOwnList answers a list of stored objects with the client's own:
// the upstream's pages from the client's cursor on, followed (with after =
// the last id) while the upstream has more, until the client's limit is
// filled, the list ends or maxListPages were read.
func (pr *proxyRequest) respondOwnList(w http.ResponseWriter, resp *http.Response, h *hold) {
	key := h.key
	first, err := io.ReadAll(io.LimitReader(resp.Body, maxListPage+1))
	h.settle(0) // the pages that follow are requests of their own
	if err != nil || len(first) > maxListPage {
		errUpstream(http.StatusBadGateway, "The upstream's list could not be read.").write(w)
		return
	}
	lim, _ := pr.ownList()
	q := pr.req.URL.Query()
	want := lim.def
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 {
		want = n
	}
	owner := pr.rl.ownerOf(pr.client)
	shared := pr.rl.sharesObjects(pr.client)
	keep := func(id string, item []byte) bool {
		rec, ok := pr.rl.may(owner, shared, id)
		if ok && rec.owner != "" && derivingEndpoints[strings.SplitN(pr.api.endpoint, "/", 2)[0]] {
			pr.rememberDerived(item, rec.key, owner, time.Now())
		}
		return ok
	}
	// A list read backwards (before) is not followed: one page is cut.
	var next func(after string) ([]byte, bool)
	if !q.Has("before") {
		next = func(after string) ([]byte, bool) { return pr.fetchListPage(key, q, lim.max, after) }
	}
	body, err := ownPage(first, want, keep, next)
	if err != nil {
		errUpstream(http.StatusBadGateway, "The upstream's list could not be read.").write(w)
		return
	}
	body = scrub(body, key.secret)
	scrubHeader(resp.Header, key.secret, key.upstream.base)
	copyResponseHeader(w.Header(), resp.Header)
	if cl := pr.client.limiter; cl != nil {
		setClientRateLimitHeaders(w.Header(), cl, time.Now())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// fetchListPage reads the next upstream page of a list with key, as one
// more request on the key's limits. It reports false when the page could
// not be had (no room on the key, an error): the list then stops there.
func (pr *proxyRequest) fetchListPage(key *poolKey, q url.Values, limit int, after string) ([]byte, bool) {
	now := time.Now()
	h, ok := reserve(pr.rl.state, now, key, nil, 0)
	if !ok {
		return nil, false
	}
	defer h.settle(0)
	out, err := pr.outboundRequest(pr.req.Context(), key)
	if err != nil {
		return nil, false
	}
	pq := cloneQuery(q)
	pq.Set("limit", strconv.Itoa(limit))
	pq.Set("after", after)
	out.URL.RawQuery = pq.Encode()
	key.state.requests.Add(1)
	h.sent()
	resp, err := key.upstream.transport.RoundTrip(out)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	pr.rl.state.learn(key.limiter, now, time.Now(), resp.Header)
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListPage+1))
	if err != nil || len(body) > maxListPage {
		return nil, false
	}
	return body, true
}

// cloneQuery copies url.Values.
func cloneQuery(q url.Values) url.Values {
	out := make(url.Values, len(q)+2)
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}

var errNotAList = errors.New("not an object list")

// ownPage builds the client's page of a list from the upstream's first page
// and, through next (nil: do not follow), the pages after it: the first
// `want` items that keep accepts, with first_id, last_id and has_more of
// those, and the upstream's other members as they were.
func ownPage(first []byte, want int, keep func(id string, item []byte) bool, next func(after string) ([]byte, bool)) ([]byte, error) {
	var kept []json.RawMessage
	var keptIDs []string
	hasMore := false
	page := first
	for pages := 1; ; pages++ {
		items, more, ok := listItems(page)
		if !ok {
			return nil, errNotAList
		}
		last := ""
		full := false
		for _, it := range items {
			id := stringMember(it, "id")
			last = id
			if id == "" || !keep(id, it) {
				continue
			}
			if len(kept) == want {
				full = true // one more of the client's: there is more
				break
			}
			kept = append(kept, it)
			keptIDs = append(keptIDs, id)
		}
		if full {
			hasMore = true
			break
		}
		if !more || last == "" {
			break
		}
		if len(kept) == want || next == nil || pages >= maxListPages {
			// Perhaps more of the client's; the next request says.
			hasMore = true
			break
		}
		var got bool
		if page, got = next(last); !got {
			hasMore = true
			break
		}
	}
	return listBody(first, kept, keptIDs, hasMore)
}

// listItems reads the items and has_more of a list page.
func listItems(page []byte) (items []json.RawMessage, hasMore, ok bool) {
	raw, found := member(page, "data")
	if !found || json.Unmarshal(raw, &items) != nil {
		return nil, false, false
	}
	if hm, found := member(page, "has_more"); found {
		hasMore = bytes.Equal(hm, []byte("true"))
	}
	return items, hasMore, true
}

// listBody writes a list in the shape of the upstream's page: its members
// in their order, with data, first_id, last_id and has_more those of the
// client's items (added when the upstream's page lacks them).
func listBody(shape []byte, items []json.RawMessage, ids []string, hasMore bool) ([]byte, error) {
	if items == nil {
		items = []json.RawMessage{}
	}
	values := map[string]any{"data": items, "has_more": hasMore, "first_id": nil, "last_id": nil}
	if len(ids) > 0 {
		values["first_id"], values["last_id"] = ids[0], ids[len(ids)-1]
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	written := map[string]bool{}
	put := func(name string, v []byte) {
		if len(written) > 0 {
			buf.WriteByte(',')
		}
		written[name] = true
		k, _ := json.Marshal(name)
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	var err error
	marshal := func(v any) []byte {
		b, e := json.Marshal(v)
		if e != nil {
			err = e
		}
		return b
	}
	eachMember(shape, func(key []byte, start, end int) {
		name := string(key)
		if written[name] {
			return
		}
		if v, ok := values[name]; ok {
			put(name, marshal(v))
			return
		}
		put(name, shape[start:end])
	})
	for _, name := range []string{"object", "data", "first_id", "last_id", "has_more"} {
		if written[name] {
			continue
		}
		if name == "object" {
			put(name, []byte(`"list"`))
			continue
		}
		put(name, marshal(values[name]))
	}
	buf.WriteByte('}')
	return buf.Bytes(), err
}
