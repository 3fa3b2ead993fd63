package openairelay

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
)

// A batch names its models on the lines of its input file (each line's
// body.model), which the relay sees only when the file is uploaded through
// it. So that a client limited to some models cannot get around them with a
// batch, the relay reads those models at upload (a file of purpose "batch")
// and keeps them with the file's record; creating a batch from a file then
// checks each of them. A file whose models the relay did not read (uploaded
// before a restart, or elsewhere) may be used by such a client only when its
// endpoints name "batches", the operator's word that its files are trusted.

// maxBatchModels bounds the models kept for one batch file.
const maxBatchModels = 64

// batchFileModels reads the models a batch input file names from a
// multipart upload; ok is false when the upload is not a batch file or its
// lines could not all be read.
func batchFileModels(body []byte, boundary string) (models []string, ok bool) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var content []byte
	batch := false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false
		}
		switch part.FormName() {
		case "purpose":
			v, err := io.ReadAll(io.LimitReader(part, 64))
			if err != nil {
				return nil, false
			}
			batch = string(bytes.TrimSpace(v)) == "batch"
		case "file":
			if content, err = io.ReadAll(part); err != nil {
				return nil, false
			}
		}
	}
	if !batch {
		return nil, false
	}
	models = []string{}
	for line := range bytes.SplitSeq(content, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		b, found := member(line, "body")
		if !found {
			return nil, false
		}
		m := stringMember(b, "model")
		if m == "" {
			return nil, false // the API refuses such a line; nothing to check it against
		}
		if !slices.Contains(models, m) {
			if len(models) == maxBatchModels {
				return nil, false
			}
			models = append(models, m)
		}
	}
	return models, true
}

// checkBatch refuses a batch that would use a model the client may not, or
// whose models the relay does not know, for a client limited to some models.
func (pr *proxyRequest) checkBatch() *apiError {
	c := pr.client
	if pr.req.Method != http.MethodPost || pr.api.endpoint != "batches" || len(c.Models) == 0 || c.namesEndpoint("batches") {
		return nil
	}
	rec, ok := pr.rl.state.objects().get(stringMember(pr.api.body, "input_file_id"))
	if !ok || rec.models == nil {
		return &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "model_not_allowed", Param: "input_file_id",
			Message: "This client may use only some models, and the models of this batch's input file are not known to the relay: upload the file through the relay with purpose \"batch\"."}
	}
	for _, m := range rec.models {
		if !c.allowsModel(m) {
			return errModelNotAllowed(m)
		}
	}
	return nil
}
