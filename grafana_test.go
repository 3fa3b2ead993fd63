package openairelay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const dashboardFile = "examples/grafana/openai_relay.json"

// metricInfo is what the dashboard may ask of one of the relay's metrics.
type metricInfo struct {
	labels    map[string]bool
	histogram bool
}

// descRE matches prometheus.Desc's String(): its quoted strings are Go
// quoted, so they cannot hide the braces that follow them.
var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: "(?:[^"\\]|\\.)*", unit: "(?:[^"\\]|\\.)*", constLabels: \{(.*)\}, variableLabels: \{([^{}]*)\}\}$`)

// relayMetrics lists every metric the relay's collectors describe, with its
// labels. Described, not gathered: a vec exports nothing until it is used.
func relayMetrics(t *testing.T) map[string]metricInfo {
	t.Helper()
	metrics := make(map[string]metricInfo)
	for _, c := range collectors() {
		var histogram bool
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			histogram = true
		}
		ch := make(chan *prometheus.Desc)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		for d := range ch {
			name, labels, err := parseDesc(d.String())
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := metrics[name]; dup {
				t.Fatalf("metric %s described twice", name)
			}
			metrics[name] = metricInfo{labels: labels, histogram: histogram}
		}
	}
	// registerMetrics registers the same collectors: what a registry
	// gathers from them is described above, with the same labels.
	reg := prometheus.NewPedanticRegistry()
	registerMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		m, ok := metrics[mf.GetName()]
		if !ok {
			t.Fatalf("registry gathers %s, which no collector describes", mf.GetName())
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if !m.labels[lp.GetName()] {
					t.Fatalf("registry gathers %s with label %s, not described", mf.GetName(), lp.GetName())
				}
			}
		}
	}
	// A guard on the parsing of Desc.String(), should its format change.
	if got := metrics["caddy_openai_relay_requests_total"].labels; !got["upstream"] || !got["key"] || !got["outcome"] || len(got) != 3 {
		t.Fatalf("requests_total labels parsed as %v", got)
	}
	if !metrics["caddy_openai_relay_time_to_first_token_seconds"].histogram || metrics["caddy_openai_relay_key_state"].labels["state"] != true {
		t.Fatalf("metrics parsed as %v", metrics)
	}
	return metrics
}

// parseDesc reads the name and the label names of a prometheus.Desc's String().
func parseDesc(s string) (string, map[string]bool, error) {
	m := descRE.FindStringSubmatch(s)
	if m == nil {
		return "", nil, fmt.Errorf("cannot parse %s", s)
	}
	name, err := strconv.Unquote(m[1])
	if err != nil {
		return "", nil, fmt.Errorf("%s: %v", s, err)
	}
	labels := make(map[string]bool)
	// constLabels: name="value",… with Go-quoted values.
	for rest := m[2]; rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return "", nil, fmt.Errorf("%s: const labels %q", s, m[2])
		}
		labels[rest[:eq]] = true
		q, err := strconv.QuotedPrefix(rest[eq+1:])
		if err != nil {
			return "", nil, fmt.Errorf("%s: const labels %q", s, m[2])
		}
		rest = strings.TrimPrefix(rest[eq+1+len(q):], ",")
	}
	// variableLabels: names, c(name) for a constrained one.
	if m[3] != "" {
		for _, l := range strings.Split(m[3], ",") {
			labels[strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")] = true
		}
	}
	return name, labels, nil
}

// A token of a PromQL expression.
type pqToken struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'v' $variable, 'r' [range], 'p' punctuation
	text string
}

var (
	pqIdent    = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*`)
	pqNumber   = regexp.MustCompile(`^[0-9.][0-9A-Za-z.+]*`)
	pqVariable = regexp.MustCompile(`^\$(\{[A-Za-z0-9_:.]+\}|[A-Za-z0-9_]+)`)
)

// pqTokens splits a PromQL expression into tokens; ranges and subqueries
// ([5m], [$__rate_interval], [1h:1m]) are one token each.
func pqTokens(expr string) ([]pqToken, error) {
	var toks []pqToken
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, pqToken{'s', expr[i+1 : j]})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [ at %d", i)
			}
			toks = append(toks, pqToken{'r', expr[i : i+j+1]})
			i += j + 1
		case pqIdent.MatchString(expr[i:]):
			s := pqIdent.FindString(expr[i:])
			toks = append(toks, pqToken{'i', s})
			i += len(s)
		case pqNumber.MatchString(expr[i:]):
			s := pqNumber.FindString(expr[i:])
			toks = append(toks, pqToken{'n', s})
			i += len(s)
		case pqVariable.MatchString(expr[i:]):
			s := pqVariable.FindString(expr[i:])
			toks = append(toks, pqToken{'v', s})
			i += len(s)
		default:
			if i+1 < len(expr) && slices.Contains([]string{"==", "!=", "=~", "!~", "<=", ">="}, expr[i:i+2]) {
				toks = append(toks, pqToken{'p', expr[i : i+2]})
				i += 2
			} else if strings.IndexByte("(){},+-*/%^<>=@", c) >= 0 {
				toks = append(toks, pqToken{'p', string(c)})
				i++
			} else {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
		}
	}
	return toks, nil
}

// pqKeywords are the identifiers of PromQL that are neither metrics nor
// functions.
var pqKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true, "inf": true, "nan": true}

// labelValues are the values of the labels that take a fixed set: a
// matcher naming another matches nothing, silently.
var labelValues = func() map[string]map[string]bool {
	set := func(vs ...string) map[string]bool {
		m := make(map[string]bool)
		for _, v := range vs {
			m[v] = true
		}
		return m
	}
	var outcomes []string
	for o := outcomeSuccess; o <= outcomeNetwork; o++ {
		outcomes = append(outcomes, o.String())
	}
	return map[string]map[string]bool{
		"outcome": set(append(outcomes, "client_closed")...), // client_closed: proxyRequest.count in attempt.go
		"reason":  set(outcomes...),                          // retriesTotal: the previous attempt's outcome
		"state":   set("available", "cooling", "retired"),    // keyCollector
		"mode":    set("redis", "local", "reject"),           // redisState.setModeGauge
		"kind":    set("prompt", "completion", "cached"),     // finish.go
		"result":  set(cacheHit, cacheMiss, cacheBypass, cacheCoalesced),
	}
}()

// metricUse is one metric selector of an expression.
type metricUse struct {
	at     int    // token index
	name   string // the metric: a histogram's, for its _bucket, _sum and _count
	bucket bool
}

// exprCheck is the metrics and labels one expression uses, and what is wrong
// with them.
type exprCheck struct {
	metrics []string
	errs    []string
}

func (c *exprCheck) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// labelOK says whether a selector of use may name label.
func labelOK(metrics map[string]metricInfo, use metricUse, label string) bool {
	return metrics[use.name].labels[label] || label == "job" || label == "instance" || (label == "le" && use.bucket)
}

// resolveMetric maps a series name to the relay's metric it belongs to.
func resolveMetric(metrics map[string]metricInfo, series string) (metricUse, error) {
	if m, ok := metrics[series]; ok {
		if m.histogram {
			return metricUse{}, fmt.Errorf("%s is a histogram: use its _bucket, _sum or _count", series)
		}
		return metricUse{name: series}, nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		if m, known := metrics[base]; known && m.histogram {
			return metricUse{name: base, bucket: suffix == "_bucket"}, nil
		}
	}
	if strings.HasPrefix(series, "caddy_openai_relay_") {
		return metricUse{}, fmt.Errorf("%s is no metric the relay registers", series)
	}
	return metricUse{}, fmt.Errorf("%s is not one of the relay's metrics (caddy_openai_relay_*)", series)
}

// checkPromQL finds the metrics an expression selects and the labels it
// filters or groups by, and checks them against the relay's metrics: every
// metric registered, every label one of its metric's.
func checkPromQL(expr string, metrics map[string]metricInfo) exprCheck {
	var c exprCheck
	toks, err := pqTokens(expr)
	if err != nil {
		c.errorf("%v", err)
		return c
	}
	// Matching brackets.
	match := make(map[int]int)
	var stack []int
	for i, t := range toks {
		if t.kind != 'p' {
			continue
		}
		switch t.text {
		case "(", "{":
			stack = append(stack, i)
		case ")", "}":
			if len(stack) == 0 || (toks[stack[len(stack)-1]].text == "(") != (t.text == ")") {
				c.errorf("unbalanced %s", t.text)
				return c
			}
			match[stack[len(stack)-1]] = i
			match[i] = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		c.errorf("unbalanced %s", toks[stack[0]].text)
		return c
	}
	is := func(i int, kind byte, text string) bool {
		return i >= 0 && i < len(toks) && toks[i].kind == kind && (text == "" || toks[i].text == text)
	}

	// Metric selectors and their label matchers.
	var uses []metricUse
	type grouping struct {
		keyword    string
		labels     []string
		from, to   int // the tokens the grouping applies to
		anyOfScope bool
	}
	var groupings []grouping
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == 'p' && t.text == "{":
			c.errorf("a selector without a metric name: %s", expr)
			i = match[i]
		case t.kind == 'v' && !is(i-1, 'p', "@"):
			c.errorf("variable %s outside a string or a range", t.text)
		case t.kind != 'i':
		case is(i+1, 'p', "(") && slices.Contains([]string{"by", "without", "on", "ignoring", "group_left", "group_right"}, t.text):
			end := match[i+1]
			g := grouping{keyword: t.text}
			for j := i + 2; j < end; j++ {
				switch {
				case is(j, 'i', ""):
					g.labels = append(g.labels, toks[j].text)
				case is(j, 'p', ","):
				default:
					c.errorf("%s (…) holds %q", t.text, toks[j].text)
				}
			}
			switch {
			case t.text == "on" || t.text == "ignoring":
				g.from, g.to = 0, len(toks)
			case t.text == "group_left" || t.text == "group_right":
				g.from, g.to, g.anyOfScope = 0, len(toks), true
			case is(i-1, 'i', "") && is(end+1, 'p', "("):
				// sum by (labels) (expr)
				g.from, g.to = end+1, match[end+1]
			case is(i-1, 'p', ")"):
				// sum (expr) by (labels)
				g.from, g.to = match[i-1], i-1
			default:
				c.errorf("%s (…) applies to nothing", t.text)
			}
			groupings = append(groupings, g)
			i = end
		case is(i+1, 'p', "(") || is(i+1, 'i', "by") || is(i+1, 'i', "without") || pqKeywords[strings.ToLower(t.text)]:
			// A function, an aggregation or a keyword.
		default:
			use, err := resolveMetric(metrics, t.text)
			if err != nil {
				c.errorf("%v", err)
				if is(i+1, 'p', "{") {
					i = match[i+1]
				}
				continue
			}
			use.at = i
			uses = append(uses, use)
			c.metrics = append(c.metrics, use.name)
			if !is(i+1, 'p', "{") {
				continue
			}
			end := match[i+1]
			for j := i + 2; j < end; {
				if !is(j, 'i', "") || !is(j+1, 'p', "") || !slices.Contains([]string{"=", "!=", "=~", "!~"}, toks[j+1].text) || !is(j+2, 's', "") {
					c.errorf("cannot read the matchers of %s", t.text)
					break
				}
				if label := toks[j].text; !labelOK(metrics, use, label) {
					c.errorf("%s has no label %s", t.text, label)
				} else if op := toks[j+1].text; op == "=" || op == "=~" {
					for _, v := range strings.Split(toks[j+2].text, "|") {
						if known := labelValues[label]; known != nil && pqIdent.MatchString(v) && pqIdent.FindString(v) == v && !known[v] {
							c.errorf("%s: %s is never %q", t.text, label, v)
						}
					}
				}
				j += 3
				if is(j, 'p', ",") {
					j++
				}
			}
			i = end
		}
	}
	for _, g := range groupings {
		var scope []metricUse
		for _, u := range uses {
			if u.at > g.from && u.at < g.to {
				scope = append(scope, u)
			}
		}
		if len(scope) == 0 {
			c.errorf("%s (%s) over no metric", g.keyword, strings.Join(g.labels, ", "))
		}
		for _, l := range g.labels {
			ok := !g.anyOfScope
			for _, u := range scope {
				if g.anyOfScope {
					ok = ok || labelOK(metrics, u, l)
				} else if !labelOK(metrics, u, l) {
					ok = false
					c.errorf("%s (%s): %s has no label %s", g.keyword, strings.Join(g.labels, ", "), toks[u.at].text, l)
				}
			}
			if g.anyOfScope && !ok {
				c.errorf("%s (%s): no metric has label %s", g.keyword, strings.Join(g.labels, ", "), l)
			}
		}
	}
	return c
}

// checkVariableQuery checks the query of a Grafana template variable of
// the Prometheus data source: label_values(label),
// label_values(selector, label) or query_result(expr).
func checkVariableQuery(q string, metrics map[string]metricInfo) exprCheck {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "query_result("); ok && strings.HasSuffix(inner, ")") {
		return checkPromQL(strings.TrimSuffix(inner, ")"), metrics)
	}
	inner, ok := strings.CutPrefix(q, "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return exprCheck{errs: []string{fmt.Sprintf("unsupported variable query %q", q)}}
	}
	inner = strings.TrimSuffix(inner, ")")
	comma := strings.LastIndexByte(inner, ',')
	label := strings.TrimSpace(inner[comma+1:])
	if !pqIdent.MatchString(label) || pqIdent.FindString(label) != label {
		return exprCheck{errs: []string{fmt.Sprintf("label_values: %q is no label name", label)}}
	}
	if comma < 0 {
		// label_values(label): a label of any of the relay's metrics, or
		// of the scrape.
		if label == "job" || label == "instance" {
			return exprCheck{}
		}
		for _, m := range metrics {
			if m.labels[label] {
				return exprCheck{}
			}
		}
		return exprCheck{errs: []string{fmt.Sprintf("label_values(%s): no metric has that label", label)}}
	}
	c := checkPromQL(inner[:comma], metrics)
	for _, m := range c.metrics {
		if !labelOK(metrics, metricUse{name: m}, label) {
			c.errorf("label_values: %s has no label %s", m, label)
		}
	}
	return c
}

// dashboardQuery is an expression of the dashboard and where it is.
type dashboardQuery struct {
	where, expr string
	variable    bool // a template variable's query
}

// dashboardQueries lists every query of a dashboard: its panels' targets,
// the panels of rows (collapsed rows hold theirs), and its template
// variables' queries.
func dashboardQueries(dash map[string]any) ([]dashboardQuery, []string) {
	var qs []dashboardQuery
	var errs []string
	var walk func(panels []any, where string)
	walk = func(panels []any, where string) {
		for _, p := range panels {
			p, _ := p.(map[string]any)
			title := fmt.Sprintf("%s/%v", where, p["title"])
			targets, _ := p["targets"].([]any)
			for _, t := range targets {
				t, _ := t.(map[string]any)
				expr, ok := t["expr"].(string)
				if !ok || strings.TrimSpace(expr) == "" {
					errs = append(errs, title+": a target without expr")
					continue
				}
				qs = append(qs, dashboardQuery{where: fmt.Sprintf("%s %v", title, t["refId"]), expr: expr})
			}
			if sub, ok := p["panels"].([]any); ok {
				walk(sub, title)
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels, "")
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		v, _ := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		where := fmt.Sprintf("variable %v", v["name"])
		var exprs []string
		switch q := v["query"].(type) {
		case string:
			exprs = append(exprs, q)
		case map[string]any:
			if s, ok := q["query"].(string); ok {
				exprs = append(exprs, s)
			}
		}
		if d, ok := v["definition"].(string); ok && d != "" && !slices.Contains(exprs, d) {
			exprs = append(exprs, d)
		}
		if len(exprs) == 0 {
			errs = append(errs, where+": no query")
		}
		for _, e := range exprs {
			qs = append(qs, dashboardQuery{where: where, expr: e, variable: true})
		}
	}
	return qs, errs
}

// countKey counts the keys named key anywhere in v.
func countKey(v any, key string) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k == key {
				n++
			}
			n += countKey(e, key)
		}
	case []any:
		for _, e := range v {
			n += countKey(e, key)
		}
	}
	return n
}

var dashboardVarRE = regexp.MustCompile(`\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))`)

// checkDashboard checks a dashboard's JSON: importable (a Prometheus data
// source input, every panel on the datasource variable), and every query on
// the relay's metrics and their labels. It returns the metrics the queries
// use and what is wrong.
func checkDashboard(raw []byte, metrics map[string]metricInfo) (map[string]bool, []string) {
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		return nil, []string{err.Error()}
	}
	var errs []string
	errorf := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if v, _ := dash["schemaVersion"].(float64); v < 39 {
		errorf("schemaVersion %v: want a current one (39 or later)", dash["schemaVersion"])
	}
	if s, _ := dash["uid"].(string); s == "" {
		errorf("no uid")
	}
	inputs, _ := dash["__inputs"].([]any)
	hasInput := false
	for _, in := range inputs {
		in, _ := in.(map[string]any)
		hasInput = hasInput || (in["name"] == "DS_PROMETHEUS" && in["type"] == "datasource" && in["pluginId"] == "prometheus")
	}
	if !hasInput || !bytes.Contains(raw, []byte("${DS_PROMETHEUS}")) {
		errorf("no DS_PROMETHEUS input used for import")
	}
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	hasDatasource := false
	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		v, _ := v.(map[string]any)
		name, _ := v["name"].(string)
		vars[name] = true
		hasDatasource = hasDatasource || (name == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus")
		if v["type"] == "query" && !onDatasourceVar(v["datasource"]) {
			errorf("variable %s is not on ${datasource}", name)
		}
	}
	if !hasDatasource {
		errorf("no datasource variable of type prometheus")
	}

	// Panels: unique ids, on the datasource variable, with a unit.
	ids := make(map[float64]bool)
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p, _ := p.(map[string]any)
			id, _ := p["id"].(float64)
			if ids[id] {
				errorf("panel id %v repeated", id)
			}
			ids[id] = true
			if _, ok := p["gridPos"].(map[string]any); !ok {
				errorf("panel %v has no gridPos", p["title"])
			}
			if sub, ok := p["panels"].([]any); ok {
				walk(sub)
			}
			if p["type"] == "row" {
				continue
			}
			if !onDatasourceVar(p["datasource"]) {
				errorf("panel %v is not on ${datasource}", p["title"])
			}
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				errorf("panel %v has no query", p["title"])
			}
			for _, t := range targets {
				if t, _ := t.(map[string]any); !onDatasourceVar(t["datasource"]) {
					errorf("a query of panel %v is not on ${datasource}", p["title"])
				}
			}
			fc, _ := p["fieldConfig"].(map[string]any)
			defaults, _ := fc["defaults"].(map[string]any)
			if _, ok := defaults["unit"].(string); !ok && p["type"] != "state-timeline" {
				errorf("panel %v has no unit", p["title"])
			}
		}
	}
	panels, _ := dash["panels"].([]any)
	walk(panels)

	qs, qerrs := dashboardQueries(dash)
	errs = append(errs, qerrs...)
	panelQueries := 0
	used := make(map[string]bool)
	for _, q := range qs {
		if !q.variable {
			panelQueries++
		}
		for _, m := range dashboardVarRE.FindAllStringSubmatch(q.expr, -1) {
			if name := m[1] + m[2]; !vars[name] {
				errorf("%s: undefined variable $%s", q.where, name)
			}
		}
		var c exprCheck
		if q.variable {
			c = checkVariableQuery(q.expr, metrics)
		} else {
			c = checkPromQL(q.expr, metrics)
		}
		for _, e := range c.errs {
			errorf("%s: %s (in %s)", q.where, e, q.expr)
		}
		if len(c.metrics) == 0 && len(c.errs) == 0 {
			errorf("%s: no metric in %s", q.where, q.expr)
		}
		for _, m := range c.metrics {
			used[m] = true
		}
	}
	// Every expr of the file is one dashboardQueries found.
	if n := countKey(dash, "expr"); n != panelQueries {
		errorf("the dashboard has %d expr, the panels' targets %d", n, panelQueries)
	}
	return used, errs
}

func onDatasourceVar(v any) bool {
	ds, _ := v.(map[string]any)
	return ds["type"] == "prometheus" && ds["uid"] == "${datasource}"
}

// TestGrafanaDashboard checks examples/grafana/openai_relay.json against the
// metrics the relay registers: every metric it queries exists, every label
// it filters or groups by is that metric's, and every metric has a panel.
func TestGrafanaDashboard(t *testing.T) {
	metrics := relayMetrics(t)
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	used, errs := checkDashboard(raw, metrics)
	for _, e := range errs {
		t.Error(e)
	}
	for name := range metrics {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}

	// Broken copies of the dashboard fail.
	for _, c := range []struct{ name, old, new string }{
		{"metric in a collapsed row", "caddy_openai_relay_cache_bytes{", "caddy_openai_relay_cache_byte{"},
		{"group by a label the metric lacks", "sum by (reason)", "sum by (upstream)"},
		{"matcher label", `{outcome=\"rate_limited\"`, `{outcomes=\"rate_limited\"`},
		{"label value", `{outcome=\"rate_limited\"`, `{outcome=\"rate_limit\"`},
		{"histogram suffix", "caddy_openai_relay_queue_wait_seconds_bucket", "caddy_openai_relay_queue_wait_bucket"},
		{"variable query label", "}, upstream)", "}, upstreams)"},
		{"variable query metric", "label_values(caddy_openai_relay_queue_length,", "label_values(caddy_openai_relay_queue_len,"},
		{"undefined variable", `upstream=~\"$upstream\"`, `upstream=~\"$upstrem\"`},
		{"panel data source", `"uid": "${datasource}"`, `"uid": "prometheus"`},
	} {
		t.Run("broken/"+c.name, func(t *testing.T) {
			if !bytes.Contains(raw, []byte(c.old)) {
				t.Fatalf("the dashboard has no %s", c.old)
			}
			_, errs := checkDashboard(bytes.Replace(raw, []byte(c.old), []byte(c.new), 1), metrics)
			if len(errs) == 0 {
				t.Fatalf("replacing %s by %s passes", c.old, c.new)
			}
			t.Logf("fails as it should: %s", errs[0])
		})
	}
}

// TestCheckPromQL checks the checker on expressions right and wrong.
func TestCheckPromQL(t *testing.T) {
	metrics := relayMetrics(t)
	for _, c := range []struct {
		expr    string
		ok      bool
		metrics []string
	}{
		{`sum by (outcome) (rate(caddy_openai_relay_requests_total{upstream=~"$upstream", key!="a"}[$__rate_interval]))`, true,
			[]string{"caddy_openai_relay_requests_total"}},
		{`sum(rate(caddy_openai_relay_retries_total[5m])) by (reason)`, true, []string{"caddy_openai_relay_retries_total"}},
		{`histogram_quantile(0.9, sum by (le, upstream) (rate(caddy_openai_relay_upstream_latency_seconds_bucket{instance="a:2019"}[5m])))`, true,
			[]string{"caddy_openai_relay_upstream_latency_seconds"}},
		{`sum(rate(caddy_openai_relay_queue_wait_seconds_sum[5m])) / sum(rate(caddy_openai_relay_queue_wait_seconds_count[5m]))`, true,
			[]string{"caddy_openai_relay_queue_wait_seconds", "caddy_openai_relay_queue_wait_seconds"}},
		{`max by (key) (caddy_openai_relay_key_state{state="cooling"} + ignoring (state) 2 * caddy_openai_relay_key_state{state="retired"})`, true,
			[]string{"caddy_openai_relay_key_state", "caddy_openai_relay_key_state"}},
		{`count by (mode) (caddy_openai_relay_state_mode == 1) or vector(0)`, true, []string{"caddy_openai_relay_state_mode"}},
		{`sum without (key) (caddy_openai_relay_key_in_flight{job="caddy"})`, true, []string{"caddy_openai_relay_key_in_flight"}},

		{`sum(rate(caddy_openai_relay_cache_requests_total{result=~"HIT|MISS", result!="x"}[5m]))`, true, []string{"caddy_openai_relay_cache_requests_total"}},
		{`sum(rate(caddy_openai_relay_requests_total{outcome="rate_limit"}[5m]))`, false, nil},    // no such outcome
		{`sum(rate(caddy_openai_relay_cache_requests_total{result=~"HIT|hit"}[5m]))`, false, nil}, // no such result
		{`sum(rate(caddy_openai_relay_request_total[5m]))`, false, nil},                           // no such metric
		{`sum(rate(up[5m]))`, false, nil},                                                          // not the relay's
		{`sum(rate(caddy_openai_relay_requests_total{upsteam="a"}[5m]))`, false, nil},              // matcher label
		{`sum by (upstream) (rate(caddy_openai_relay_retries_total[5m]))`, false, nil},             // grouping label
		{`sum(rate(caddy_openai_relay_retries_total[5m])) by (upstream)`, false, nil},              // grouping label, after
		{`sum without (model) (rate(caddy_openai_relay_requests_total[5m]))`, false, nil},          // without label
		{`sum by (le) (rate(caddy_openai_relay_upstream_latency_seconds_count[5m]))`, false, nil},  // le not on _count
		{`sum(rate(caddy_openai_relay_requests_total_bucket[5m]))`, false, nil},                    // not a histogram
		{`sum(rate(caddy_openai_relay_time_to_first_token_seconds[5m]))`, false, nil},              // histogram without suffix
		{`sum(rate({__name__="caddy_openai_relay_requests_total"}[5m]))`, false, nil},              // no metric name
		{`sum(rate(caddy_openai_relay_requests_total[5m])`, false, nil},                            // unbalanced
		{`caddy_openai_relay_key_state / on (model) caddy_openai_relay_key_in_flight`, false, nil}, // on label
		{`sum by (upstream) (caddy_openai_relay_key_state) / sum(caddy_openai_relay_cache_bytes)`, true, // by applies to its own group only
			[]string{"caddy_openai_relay_key_state", "caddy_openai_relay_cache_bytes"}},
	} {
		got := checkPromQL(c.expr, metrics)
		if ok := len(got.errs) == 0; ok != c.ok {
			t.Errorf("%s: ok %v, want %v (errors %q)", c.expr, ok, c.ok, got.errs)
		} else if !ok {
			t.Logf("%s: %s", c.expr, got.errs[0])
		}
		if c.ok && !slices.Equal(got.metrics, c.metrics) {
			t.Errorf("%s: metrics %q, want %q", c.expr, got.metrics, c.metrics)
		}
	}
	for _, c := range []struct {
		query string
		ok    bool
	}{
		{`label_values(caddy_openai_relay_key_state, upstream)`, true},
		{`label_values(caddy_openai_relay_key_state{upstream=~"$upstream"}, key)`, true},
		{`label_values(instance)`, true},
		{`label_values(modle)`, false},
		{`label_values(upstream)`, true},
		{`label_values(caddy_openai_relay_key_state, model)`, false},
		{`label_values(caddy_openai_relay_keys_state, key)`, false},
		{`label_values(caddy_openai_relay_key_state{modle="x"}, key)`, false},
		{`query_result(sum by (client) (caddy_openai_relay_spend_usd_total))`, true},
		{`query_result(sum by (kind) (caddy_openai_relay_spend_usd_total))`, false},
		{`metrics(caddy_openai_relay_.*)`, false},
	} {
		got := checkVariableQuery(c.query, metrics)
		if ok := len(got.errs) == 0; ok != c.ok {
			t.Errorf("%s: errors %q, want ok %v", c.query, got.errs, c.ok)
		} else if !ok {
			t.Logf("%s: %s", c.query, got.errs[0])
		}
	}
}
