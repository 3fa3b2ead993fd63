package fakeopenai

import (
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
)

// ---- stored objects ----

// fileObject is the API's File object (openai-python types/file_object.py).
type fileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int     `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

type storedFile struct {
	obj              fileObject
	content          []byte
	project, creator string
	seq              int64
}

type storedResponse struct {
	resp             responseObj
	input            []json.RawMessage // input items, each with an id
	inputIDs         []string
	project, creator string
	seq              int64
}

type deletedObj struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// listObj is the API's cursor list (object "list", data, first_id, last_id,
// has_more; openai-python types/responses/response_item_list.py).
type listObj struct {
	Object  string  `json:"object"`
	Data    any     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// visible: objects belong to the project of the key that created them.
func (s *Server) visible(owner, project string) bool {
	return s.opts.SharedObjects || owner == project
}

func (s *Server) lookupFile(id, project string) *storedFile {
	s.objMu.Lock()
	defer s.objMu.Unlock()
	if f := s.files[id]; f != nil && s.visible(f.project, project) {
		return f
	}
	return nil
}

func (s *Server) lookupResponse(id, project string) *storedResponse {
	s.objMu.Lock()
	defer s.objMu.Unlock()
	if r := s.responses[id]; r != nil && s.visible(r.project, project) {
		return r
	}
	return nil
}

// storeResponse keeps a response (and its input items) for its project.
func (c *call) storeResponse(resp responseObj, input []json.RawMessage, ids []string) {
	s := c.s
	s.objMu.Lock()
	s.objSeq++
	s.responses[resp.ID] = &storedResponse{resp: resp, input: input, inputIDs: ids, project: c.project, creator: c.secret, seq: s.objSeq}
	s.objMu.Unlock()
}

// Objects are the ids of the stored files and responses owned by key's
// project, oldest first.
func (s *Server) Objects(key string) []string {
	project := s.Project(key)
	if project == "" {
		return nil
	}
	type obj struct {
		id  string
		seq int64
	}
	var objs []obj
	s.objMu.Lock()
	for id, f := range s.files {
		if f.project == project {
			objs = append(objs, obj{id, f.seq})
		}
	}
	for id, r := range s.responses {
		if r.project == project {
			objs = append(objs, obj{id, r.seq})
		}
	}
	s.objMu.Unlock()
	slices.SortFunc(objs, func(a, b obj) int { return int(a.seq - b.seq) })
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.id
	}
	return out
}

// HasObject reports whether a file or response with this id is stored.
func (s *Server) HasObject(id string) bool { return s.ObjectCreator(id) != "" }

// ObjectCreator is the key that created the stored object id ("" if none).
func (s *Server) ObjectCreator(id string) string {
	s.objMu.Lock()
	defer s.objMu.Unlock()
	if f := s.files[id]; f != nil {
		return f.creator
	}
	if r := s.responses[id]; r != nil {
		return r.creator
	}
	return ""
}

// ClearObjects forgets every stored file and response.
func (s *Server) ClearObjects() {
	s.objMu.Lock()
	clear(s.files)
	clear(s.responses)
	s.objMu.Unlock()
}

// ---- list parameters ----

type listParams struct {
	limit   int
	desc    bool
	after   string
	purpose string
}

// parseList reads limit (1..max, default def), order (asc | desc, default
// desc) and after, answering the API's validation errors (worded as its
// "Invalid 'n': integer below minimum value. Expected a value >= 1, but got
// 0 instead." / integer_below_min_value family).
func (c *call) parseList(maxLimit, def int) (listParams, bool) {
	q := c.r.URL.Query()
	lp := listParams{limit: def, desc: true, after: q.Get("after"), purpose: q.Get("purpose")}
	if q.Has("limit") {
		v := q.Get("limit")
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			c.fail(http.StatusBadRequest, "Invalid type for 'limit': expected an integer, but got a string instead.", "invalid_request_error", strp("limit"), strp("invalid_type"))
			return lp, false
		case n < 1:
			c.fail(http.StatusBadRequest, "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got "+v+" instead.", "invalid_request_error", strp("limit"), strp("integer_below_min_value"))
			return lp, false
		case n > maxLimit:
			c.fail(http.StatusBadRequest, "Invalid 'limit': integer above maximum value. Expected a value <= "+strconv.Itoa(maxLimit)+", but got "+v+" instead.", "invalid_request_error", strp("limit"), strp("integer_above_max_value"))
			return lp, false
		}
		lp.limit = n
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		lp.desc = false
	default:
		c.fail(http.StatusBadRequest, "Invalid value: '"+o+"'. Supported values are: 'asc' and 'desc'.", "invalid_request_error", strp("order"), strp("invalid_value"))
		return lp, false
	}
	return lp, true
}

// page cuts ids (already in the list's order) after the cursor; an unknown
// cursor gives an empty page.
func page(ids []string, lp listParams) (from, to int, hasMore bool) {
	if lp.after != "" {
		i := slices.Index(ids, lp.after)
		if i < 0 {
			return 0, 0, false
		}
		from = i + 1
	}
	to = min(from+lp.limit, len(ids))
	return from, to, to < len(ids)
}

func writeList[T any](c *call, data []T, ids []string, hasMore bool) {
	l := listObj{Object: "list", Data: data, HasMore: hasMore}
	if data == nil {
		l.Data = []T{}
	}
	if len(ids) > 0 {
		l.FirstID, l.LastID = &ids[0], &ids[len(ids)-1]
	}
	c.writeJSON(http.StatusOK, l)
}

// ---- files ----

type uploadForm struct {
	hasFile, hasPurpose bool
	filename, purpose   string
	content             []byte
}

// parseUpload reads the multipart body of POST /v1/files.
func parseUpload(ct string, body []byte) (uploadForm, error) {
	var f uploadForm
	err := eachFormPart(ct, body, func(p *multipart.Part) error {
		switch p.FormName() {
		case "file":
			b, err := io.ReadAll(p)
			if err != nil {
				return errForm
			}
			f.hasFile, f.content, f.filename = true, b, p.FileName()
		case "purpose":
			v, err := formValue(p)
			if err != nil {
				return err
			}
			f.hasPurpose, f.purpose = true, v
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	if f.filename == "" {
		f.filename = "file"
	}
	return f, nil
}

func (c *call) validateUpload(f uploadForm, parseErr error) bool {
	switch {
	case parseErr != nil:
		c.failParse(parseErr, true)
	case !f.hasFile:
		c.fail(http.StatusBadRequest, "Missing required parameter: 'file'.", "invalid_request_error", strp("file"), strp("missing_required_parameter"))
	case !f.hasPurpose:
		c.fail(http.StatusBadRequest, "Missing required parameter: 'purpose'.", "invalid_request_error", strp("purpose"), strp("missing_required_parameter"))
	case !slices.Contains(filePurposes, f.purpose):
		c.fail(http.StatusBadRequest, badPurposeMessage(f.purpose), "invalid_request_error", strp("purpose"), nil)
	default:
		return true
	}
	return false
}

func (c *call) fileCreate(f uploadForm) {
	obj := fileObject{
		ID: newID("file-", 22), Object: "file", Bytes: len(f.content), CreatedAt: c.s.now().Unix(),
		Filename: f.filename, Purpose: f.purpose, Status: "processed",
	}
	s := c.s
	s.objMu.Lock()
	s.objSeq++
	s.files[obj.ID] = &storedFile{obj: obj, content: f.content, project: c.project, creator: c.secret, seq: s.objSeq}
	s.objMu.Unlock()
	c.writeJSON(http.StatusOK, obj)
}

func (c *call) fileList(lp listParams) {
	s := c.s
	var all []*storedFile
	s.objMu.Lock()
	for _, f := range s.files {
		if s.visible(f.project, c.project) && (lp.purpose == "" || f.obj.Purpose == lp.purpose) {
			all = append(all, f)
		}
	}
	s.objMu.Unlock()
	slices.SortFunc(all, func(a, b *storedFile) int {
		if a.obj.CreatedAt != b.obj.CreatedAt {
			return int(a.obj.CreatedAt - b.obj.CreatedAt)
		}
		return int(a.seq - b.seq)
	})
	if lp.desc {
		slices.Reverse(all)
	}
	ids := make([]string, len(all))
	for i, f := range all {
		ids[i] = f.obj.ID
	}
	from, to, more := page(ids, lp)
	data := make([]fileObject, 0, to-from)
	for _, f := range all[from:to] {
		data = append(data, f.obj)
	}
	writeList(c, data, ids[from:to], more)
}

func (c *call) fileNotFound(id string) {
	c.fail(http.StatusNotFound, fileNotFoundMessage(id), "invalid_request_error", strp("id"), nil)
}

func (c *call) fileGet(id string) {
	if f := c.s.lookupFile(id, c.project); f != nil {
		c.writeJSON(http.StatusOK, f.obj)
		return
	}
	c.fileNotFound(id)
}

func (c *call) fileContent(id string) {
	if f := c.s.lookupFile(id, c.project); f != nil {
		c.writeBody(http.StatusOK, ctOctet, f.content)
		return
	}
	c.fileNotFound(id)
}

func (c *call) fileDelete(id string) {
	if !deleteVisible(c.s, c.s.files, id, c.project, func(f *storedFile) string { return f.project }) {
		c.fileNotFound(id)
		return
	}
	c.writeJSON(http.StatusOK, deletedObj{ID: id, Object: "file", Deleted: true})
}

// deleteVisible deletes the object id of m if the project may see it, and
// reports whether it did.
func deleteVisible[T any](s *Server, m map[string]T, id, project string, projectOf func(T) string) bool {
	s.objMu.Lock()
	defer s.objMu.Unlock()
	o, ok := m[id]
	if !ok || !s.visible(projectOf(o), project) {
		return false
	}
	delete(m, id)
	return true
}

var ctOctet = []string{"application/octet-stream"}

// ---- stored responses ----

func (c *call) responseNotFound(id string) {
	c.fail(http.StatusNotFound, responseNotFoundMessage(id), "invalid_request_error", nil, nil)
}

func (c *call) responseGet(id string) {
	if r := c.s.lookupResponse(id, c.project); r != nil {
		c.writeJSON(http.StatusOK, r.resp)
		return
	}
	c.responseNotFound(id)
}

func (c *call) responseDelete(id string) {
	if !deleteVisible(c.s, c.s.responses, id, c.project, func(r *storedResponse) string { return r.project }) {
		c.responseNotFound(id)
		return
	}
	c.writeJSON(http.StatusOK, deletedObj{ID: id, Object: "response", Deleted: true})
}

func (c *call) responseInputItems(id string, lp listParams) {
	r := c.s.lookupResponse(id, c.project)
	if r == nil {
		c.responseNotFound(id)
		return
	}
	items, ids := slices.Clone(r.input), slices.Clone(r.inputIDs)
	if lp.desc {
		slices.Reverse(items)
		slices.Reverse(ids)
	}
	from, to, more := page(ids, lp)
	writeList(c, items[from:to], ids[from:to], more)
}

// inputItems turns a responses input (a string or an array of items) into
// the stored input items: each gets an id (msg_… for messages) and messages
// get type "message", status "completed" and content as a list of
// input_text parts, as GET /v1/responses/{id}/input_items shows them.
func inputItems(raw json.RawMessage) ([]json.RawMessage, []string) {
	var items []map[string]any
	if isJSONString(raw) {
		var s string
		_ = json.Unmarshal(raw, &s)
		items = []map[string]any{{"role": "user", "content": s}}
	} else if json.Unmarshal(raw, &items) != nil {
		return nil, nil
	}
	out := make([]json.RawMessage, 0, len(items))
	ids := make([]string, 0, len(items))
	for _, it := range items {
		if it == nil {
			continue
		}
		if _, ok := it["type"]; !ok && it["role"] != nil {
			it["type"] = "message"
		}
		if it["type"] == "message" {
			if s, ok := it["content"].(string); ok {
				it["content"] = []map[string]any{{"type": "input_text", "text": s}}
			}
			if _, ok := it["status"]; !ok {
				it["status"] = "completed"
			}
		}
		id, _ := it["id"].(string)
		if id == "" {
			prefix := "item_"
			if it["type"] == "message" {
				prefix = "msg_"
			}
			id = newID(prefix, 48)
			it["id"] = id
		}
		b, err := json.Marshal(it)
		if err != nil {
			continue
		}
		out = append(out, b)
		ids = append(ids, id)
	}
	return out, ids
}
