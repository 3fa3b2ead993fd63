package openairelay

import (
	"encoding/json"
	"sync"
)

// Responses the upstream stores (the Responses API's `store`, the default)
// belong to the organisation of the key that created them: a request that
// continues one with previous_response_id must go to that key, or an
// upstream key of another organisation answers 404. The relay remembers
// which key created each response and pins such requests to it.

// maxResponseOwners bounds how many response ids are remembered.
const maxResponseOwners = 1 << 16

// responseOwners maps response ids to the pool id of the key that created
// them, oldest forgotten first. It is package-level, so it survives reloads.
var responseOwners = &ownerTable{byID: make(map[string]string)}

type ownerTable struct {
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

// pinnedKey is the key a request continuing a stored response must use: the
// key that created it, if the relay knows it, the request may use it and it
// is not retired. Otherwise the request goes where selection sends it.
func (pr *proxyRequest) pinnedKey() *poolKey {
	if pr.api.previousResponse == "" {
		return nil
	}
	poolID, ok := responseOwners.owner(pr.api.previousResponse)
	if !ok {
		return nil
	}
	for ti, t := range pr.route.tiers {
		for ui, keys := range t.keys {
			if !pr.route.eligible[ti][ui] {
				continue
			}
			for _, k := range keys {
				if k.poolID == poolID && !k.state.retired() {
					return k
				}
			}
		}
	}
	return nil
}

// rememberResponse records which key created a Responses API answer.
func (pr *proxyRequest) rememberResponse(key *poolKey, answer []byte, tap *streamTap) {
	if pr.api.endpoint != "responses" {
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
	responseOwners.remember(id, key.poolID)
}
