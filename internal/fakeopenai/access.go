package fakeopenai

import (
	"crypto/sha256"
	"strings"
)

// Scopes of restricted keys (KeyConfig.Scopes), as api.openai.com names them
// in its "Missing scopes: …" 401 (community.openai.com/t/1143672,
// /t/1371602, /t/1345041).
const (
	ScopeModelRequest   = "model.request"       // POST chat/completions, completions, responses, embeddings, moderations, audio
	ScopeModelRead      = "api.model.read"      // GET /models, /models/{id}
	ScopeFilesRead      = "api.files.read"      // GET /files, /files/{id}, /files/{id}/content
	ScopeFilesWrite     = "api.files.write"     // POST /files, DELETE /files/{id}
	ScopeResponsesRead  = "api.responses.read"  // GET /responses/{id}, /responses/{id}/input_items
	ScopeResponsesWrite = "api.responses.write" // POST /responses, DELETE /responses/{id}
)

// KeyConfig is the whole configuration of a key (ConfigureKey). The zero
// value is an unrestricted, unlimited KeyOK key in a project of its own.
type KeyConfig struct {
	Limits KeyLimits
	State  KeyState
	// Project groups keys: keys with the same Project share their stored
	// objects (files, responses). "" = a project of the key's own. A value
	// starting with "proj_" is the project id; any other value is a name from
	// which a stable id proj_… is derived.
	Project string
	// Models are the models the key's project may use (project model
	// permissions); nil = every served model. Others answer 403
	// model_not_found "Project `proj_…` does not have access to model `…`".
	Models []string
	// Scopes make the key a restricted key holding only these scopes
	// (Scope*); nil = unrestricted. A request lacking one answers 401
	// "You have insufficient permissions for this operation. Missing scopes: …".
	Scopes []string
	// Verified says the key's organisation is verified; the models of
	// Options.VerifiedOrgModels answer 403 to keys without it.
	Verified bool
}

// keyAccess is the immutable access part of a key's configuration.
type keyAccess struct {
	project  string
	models   map[string]struct{} // nil = all
	scopes   map[string]struct{} // nil = unrestricted
	verified bool
}

func newAccess(secret string, cfg KeyConfig) *keyAccess {
	a := &keyAccess{project: projectID(cfg.Project, secret), verified: cfg.Verified}
	if cfg.Models != nil {
		a.models = make(map[string]struct{}, len(cfg.Models))
		for _, m := range cfg.Models {
			a.models[m] = struct{}{}
		}
	}
	if cfg.Scopes != nil {
		a.scopes = make(map[string]struct{}, len(cfg.Scopes))
		for _, sc := range cfg.Scopes {
			a.scopes[sc] = struct{}{}
		}
	}
	return a
}

// projectID is the stable fake id of a project: name itself when it is
// already an id, else proj_ + 24 characters derived from the name (or from
// the key for a key's own project).
func projectID(name, secret string) string {
	if strings.HasPrefix(name, "proj_") {
		return name
	}
	seed := "project:" + name
	if name == "" {
		seed = "key:" + secret
	}
	sum := sha256.Sum256([]byte(seed))
	b := make([]byte, 0, 5+24)
	b = append(b, "proj_"...)
	for _, x := range sum[:24] {
		b = append(b, alnum[int(x)%len(alnum)])
	}
	return string(b)
}

func (a *keyAccess) allowsModel(m string) bool {
	if a.models == nil {
		return true
	}
	_, ok := a.models[m]
	return ok
}

// missing returns the scopes of need the key lacks, in need's order.
func (a *keyAccess) missing(need []string) []string {
	if a.scopes == nil {
		return nil
	}
	var out []string
	for _, sc := range need {
		if _, ok := a.scopes[sc]; !ok {
			out = append(out, sc)
		}
	}
	return out
}

// requiredScopes are the scopes an endpoint needs. POST /responses needs both
// model.request and api.responses.write: a key granted only "/v1/responses:
// Write" is refused with "Missing scopes: model.request"
// (community.openai.com/t/1371602).
func requiredScopes(ep endpoint) []string {
	switch ep {
	case epChat, epCompletions, epEmbeddings, epModerations, epAudio, epRealtime:
		return scopesModelRequest
	case epResponses, epResponsesWS:
		return scopesResponsesCreate
	case epModels, epModel:
		return scopesModelRead
	case epFileList, epFileGet, epFileContent:
		return scopesFilesRead
	case epFileCreate, epFileDelete:
		return scopesFilesWrite
	case epResponseGet, epResponseInputItems:
		return scopesResponsesRead
	case epResponseDelete:
		return scopesResponsesWrite
	}
	return nil
}

var (
	scopesModelRequest    = []string{ScopeModelRequest}
	scopesResponsesCreate = []string{ScopeModelRequest, ScopeResponsesWrite}
	scopesModelRead       = []string{ScopeModelRead}
	scopesFilesRead       = []string{ScopeFilesRead}
	scopesFilesWrite      = []string{ScopeFilesWrite}
	scopesResponsesRead   = []string{ScopeResponsesRead}
	scopesResponsesWrite  = []string{ScopeResponsesWrite}
)
