package openairelay

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// What the upstream stores (responses, files, batches, vector stores,
// fine-tuning jobs, assistants, threads, uploads) belongs to the organisation
// of the key that created it: a request that refers to it (a Responses
// previous_response_id, a file id in a batch or a message, /v1/files/<id>)
// must go to that key, or an upstream key of another organisation answers
// 404. The relay remembers which key created each such object and pins the
// requests that name one to that key.

// maxResponseOwners bounds how many object ids are remembered.
const maxResponseOwners = 1 << 16

// ownedPrefixes are the prefixes of the ids of objects the upstream stores.
var ownedPrefixes = []string{"resp_", "file-", "batch_", "vs_", "ftjob-", "asst_", "thread_", "run_", "msg_", "upload_", "conv_"}

// creatingEndpoints are the first path segments of the endpoints whose
// answers are stored objects.
var creatingEndpoints = map[string]bool{
	"responses": true, "files": true, "batches": true, "vector_stores": true, "fine_tuning": true,
	"assistants": true, "threads": true, "uploads": true, "conversations": true,
}

func ownedID(s string) bool {
	for _, p := range ownedPrefixes {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// responseOwners maps response ids to the pool id of the key that created
// them, oldest forgotten first. It is package-level, so it survives reloads.
var responseOwners = &ownerTable{byID: make(map[string]string)}

type ownerTable struct {
	n     atomic.Int64 // entries, readable without the lock
	mu    sync.Mutex
	byID  map[string]string
	order []string // ring of ids, in insertion order
	next  int
}

func (o *ownerTable) remember(id, poolID string) {
	if id == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.byID[id]; ok {
		o.byID[id] = poolID
		return
	}
	if len(o.order) < maxResponseOwners {
		o.order = append(o.order, id)
		o.n.Add(1)
	} else {
		delete(o.byID, o.order[o.next])
		o.order[o.next] = id
		o.next = (o.next + 1) % maxResponseOwners
	}
	o.byID[id] = poolID
}

func (o *ownerTable) owner(id string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.byID[id]
	return p, ok
}

// pinnedKey is the key a request must use because it names an object that
// key's organisation created: the key that created it, if the relay knows
// it, the request may use it and it is not retired. Otherwise the request
// goes where selection sends it.
func (pr *proxyRequest) pinnedKey() *poolKey {
	if responseOwners.n.Load() == 0 {
		return nil
	}
	if pr.pinned == nil {
		pr.pinned = pr.findPinned()
	}
	if pr.pinned == noPin || pr.pinned.state.retired() {
		return nil
	}
	return pr.pinned
}

// noPin marks a request found to name no known object.
var noPin = &poolKey{}

func (pr *proxyRequest) findPinned() *poolKey {
	poolID, ok := pr.ownerOfNamedObject()
	if !ok {
		return noPin
	}
	for k := range pr.route.keys() {
		if k.poolID == poolID {
			return k
		}
	}
	return noPin
}

// ownerOfNamedObject looks for a known object id in the request: its
// previous_response_id, the segments of its path, the string values of its
// JSON body.
func (pr *proxyRequest) ownerOfNamedObject() (string, bool) {
	if id := pr.api.previousResponse; id != "" {
		if p, ok := responseOwners.owner(id); ok {
			return p, true
		}
	}
	for seg := range strings.SplitSeq(pr.api.endpoint, "/") {
		if ownedID(seg) {
			if p, ok := responseOwners.owner(seg); ok {
				return p, true
			}
		}
	}
	if pr.api.kind != bodyJSON {
		return "", false
	}
	var owner string
	found := false
	eachStringValue(pr.api.body, func(s []byte) {
		if found || len(s) > 128 || !ownedID(string(s)) {
			return
		}
		owner, found = responseOwners.owner(string(s))
	})
	return owner, found
}

// rememberResponse records which key created an object the upstream
// stores: the id of a successful answer to a POST, when it is such an
// object's (a response, a file, a batch, ...), or a Responses stream's.
func (pr *proxyRequest) rememberResponse(key *poolKey, answer []byte, tap *streamTap) {
	// Only these endpoints create stored objects; chat completions and
	// embeddings, the bulk of the traffic, are not scanned again for an id.
	first, _, _ := strings.Cut(pr.api.endpoint, "/")
	if pr.req.Method != http.MethodPost || !creatingEndpoints[first] {
		return
	}
	id := ""
	switch {
	case tap != nil:
		id = tap.responseID
	case answer != nil:
		if raw, ok := member(answer, "id"); ok {
			_ = json.Unmarshal(raw, &id)
		}
	}
	if ownedID(id) {
		responseOwners.remember(id, key.poolID)
	}
}
