package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// A results file is the TSV run.sh writes, one row per case and target,
// with a header line naming the columns:
//
//	case label target requests seconds rps p50_us p99_us p999_us errors cpu_ticks clk_tck rss_kb note [aux_cpu_ticks aux_name]
//
// cpu_ticks and rss_kb are those of the proxy process (-1 for the direct
// target, which has none). aux_cpu_ticks, when present and not -1, is the CPU
// of a process the proxy depends on, named aux_name (redis-server in case g),
// over the same measurement. A case that did not run has one row with target
// "skipped" and the reason in note.

type row struct {
	caseID, label, target string
	requests              int64
	seconds, rps          float64
	p50, p99, p999        float64 // microseconds
	errors                int64
	cpuTicks, clkTck      float64
	rssKB                 int64
	note                  string
	auxTicks              float64 // -1: none
	auxName               string
}

// auxPer1k is the aux process's CPU seconds per 1,000 requests; -1 if none.
func (r *row) auxPer1k() float64 {
	if r.auxTicks < 0 || r.clkTck <= 0 || r.requests <= 0 {
		return -1
	}
	return r.auxTicks / r.clkTck / float64(r.requests) * 1000
}

// cpuPer1k is the proxy's CPU seconds per 1,000 requests; -1 if unknown.
func (r *row) cpuPer1k() float64 {
	if r.cpuTicks < 0 || r.clkTck <= 0 || r.requests <= 0 {
		return -1
	}
	return r.cpuTicks / r.clkTck / float64(r.requests) * 1000
}

// readTSV reads a results file: a header line naming the columns, then a
// row a line, handed to each with lookups by column name (num gives -1 for
// a missing or non-numeric cell).
func readTSV(path string, each func(get func(string) string, num func(string) float64)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var cols map[string]int
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Split(line, "\t")
		if cols == nil {
			cols = map[string]int{}
			for i, c := range fields {
				cols[c] = i
			}
			continue
		}
		get := func(c string) string {
			if i, ok := cols[c]; ok && i < len(fields) {
				return fields[i]
			}
			return ""
		}
		num := func(c string) float64 {
			v, err := strconv.ParseFloat(get(c), 64)
			if err != nil {
				return -1
			}
			return v
		}
		each(get, num)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if cols == nil {
		return errors.New(path + ": empty")
	}
	return nil
}

func readRows(path string) ([]*row, error) {
	var rows []*row
	err := readTSV(path, func(get func(string) string, num func(string) float64) {
		rows = append(rows, &row{
			caseID: get("case"), label: get("label"), target: get("target"),
			requests: int64(num("requests")), seconds: num("seconds"), rps: num("rps"),
			p50: num("p50_us"), p99: num("p99_us"), p999: num("p999_us"),
			errors: int64(num("errors")), cpuTicks: num("cpu_ticks"), clkTck: num("clk_tck"),
			rssKB: int64(num("rss_kb")), note: get("note"),
			auxTicks: num("aux_cpu_ticks"), auxName: get("aux_name"),
		})
	})
	if err != nil {
		return nil, err
	}
	return mergeRepeats(rows), nil
}

// mergeRepeats folds the rows of repeated measurements (BENCH_REPEAT) of one
// case and target into one: the median of req/s and of each latency
// percentile, CPU as total ticks over total requests, the highest peak RSS,
// the sum of errors. Rows keep the order of their first measurement.
func mergeRepeats(rows []*row) []*row {
	groups := map[string][]*row{}
	var order []string
	for _, r := range rows {
		k := r.caseID + "\x00" + r.target
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]*row, 0, len(order))
	for _, k := range order {
		g := groups[k]
		if len(g) == 1 {
			out = append(out, g[0])
			continue
		}
		m := *g[0]
		median := func(get func(*row) float64) float64 {
			v := make([]float64, len(g))
			for i, r := range g {
				v[i] = get(r)
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		m.rps = median(func(r *row) float64 { return r.rps })
		m.p50 = median(func(r *row) float64 { return r.p50 })
		m.p99 = median(func(r *row) float64 { return r.p99 })
		m.p999 = median(func(r *row) float64 { return r.p999 })
		m.requests, m.seconds, m.errors, m.cpuTicks, m.auxTicks = 0, 0, 0, 0, 0
		for _, r := range g {
			if r.auxTicks < 0 || m.auxTicks < 0 {
				m.auxTicks = -1
			} else {
				m.auxTicks += r.auxTicks
			}
			m.requests += r.requests
			m.seconds += r.seconds
			m.errors += r.errors
			m.rssKB = max(m.rssKB, r.rssKB)
			if r.cpuTicks < 0 || m.cpuTicks < 0 {
				m.cpuTicks = -1
			} else {
				m.cpuTicks += r.cpuTicks
			}
		}
		out = append(out, &m)
	}
	return out
}

func ms(us float64) string {
	if us < 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f", us/1000)
}

func signedMS(us float64) string {
	return fmt.Sprintf("%+.3f", us/1000)
}

// renderTable is the markdown table of all rows, then the notes of skipped
// cases and the targets of issue 5 as far as the rows measure them.
func renderTable(rows []*row, streams []*streamRow, shared []*sharedRow) string {
	var b strings.Builder
	b.WriteString("| case | target | req/s | p50 ms | p99 ms | p99.9 ms | added p50 / p99 over direct, ms | added p50 / p99 over reverse_proxy, ms | proxy CPU s / 1k req | proxy peak RSS MiB | req/s ÷ reverse_proxy | CPU/req ÷ reverse_proxy | errors |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	byCase := map[string]map[string]*row{}
	for _, r := range rows {
		if byCase[r.caseID] == nil {
			byCase[r.caseID] = map[string]*row{}
		}
		byCase[r.caseID][r.target] = r
	}
	var notes []string
	for _, r := range rows {
		if r.target == "skipped" {
			fmt.Fprintf(&b, "| %s | *skipped* | | | | | | | | | | | |\n", r.label)
			notes = append(notes, fmt.Sprintf("- %s: skipped — %s", r.label, r.note))
			continue
		}
		direct, rp := byCase[r.caseID]["direct"], byCase[r.caseID]["reverse_proxy"]
		overDirect, overRP := "—", "—"
		if direct != nil && r != direct {
			overDirect = signedMS(r.p50-direct.p50) + " / " + signedMS(r.p99-direct.p99)
		}
		if rp != nil && r != rp && r.target != "direct" {
			overRP = signedMS(r.p50-rp.p50) + " / " + signedMS(r.p99-rp.p99)
		}
		cpu, rss, thrRatio, cpuRatio := "—", "—", "—", "—"
		if c := r.cpuPer1k(); c >= 0 {
			cpu = fmt.Sprintf("%.3f", c)
		}
		if r.rssKB >= 0 {
			rss = fmt.Sprintf("%.1f", float64(r.rssKB)/1024)
		}
		if rp != nil && r.target != "direct" && rp.rps > 0 {
			thrRatio = fmt.Sprintf("%.2f", r.rps/rp.rps)
			if c, rc := r.cpuPer1k(), rp.cpuPer1k(); c >= 0 && rc > 0 {
				cpuRatio = fmt.Sprintf("%.2f", c/rc)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			r.label, r.target, r.rps, ms(r.p50), ms(r.p99), ms(r.p999), overDirect, overRP, cpu, rss, thrRatio, cpuRatio, r.errors)
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("- %s, %s: %s", r.label, r.target, r.note))
		}
		if a := r.auxPer1k(); a >= 0 {
			name := r.auxName
			if name == "" {
				name = "its helper process"
			}
			n := fmt.Sprintf("- %s, %s: %s used %.3f CPU s / 1k req besides the proxy's (not in the CPU column)", r.label, r.target, name, a)
			if c, rc := r.cpuPer1k(), -1.0; c >= 0 {
				if rp != nil {
					rc = rp.cpuPer1k()
				}
				n += fmt.Sprintf("; proxy + %s: %.3f s / 1k req", name, c+a)
				if rc > 0 {
					n += fmt.Sprintf(", %.2f× reverse_proxy's", (c+a)/rc)
				}
			}
			notes = append(notes, n)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	if len(streams) > 0 {
		b.WriteString("\n" + renderStreams(streams))
	}
	if len(shared) > 0 {
		b.WriteString("\n" + renderShared(shared))
	}
	b.WriteString("\n" + renderTargets(byCase, streams))
	return b.String()
}

// renderTargets compares the run with the targets of issue 5.
func renderTargets(byCase map[string]map[string]*row, streams []*streamRow) string {
	relayVsRP := func(caseID, relayTarget string) (relay, rp *row) {
		c := byCase[caseID]
		if c == nil {
			return nil, nil
		}
		return c[relayTarget], c["reverse_proxy"]
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	var b strings.Builder
	b.WriteString("| target (issue 5) | this run | verdict |\n|---|---|---|\n")

	// Throughput at saturation: the case with the most connections.
	if relay, rp := relayVsRP("a128", "relay"); relay != nil && rp != nil && rp.rps > 0 {
		ratio := relay.rps / rp.rps
		fmt.Fprintf(&b, "| throughput ≥ 0.9× reverse_proxy at saturation | %.2f× (case a, 128 connections) | %s |\n", ratio, verdict(ratio >= 0.9))
	} else {
		b.WriteString("| throughput ≥ 0.9× reverse_proxy at saturation | not measured | — |\n")
	}
	if relay, rp := relayVsRP("b", "relay"); relay != nil && rp != nil {
		added := (relay.p99 - rp.p99) / 1000
		scale := ""
		if direct := byCase["b"]["direct"]; direct != nil {
			// The upstream's own tail says how much of a p99 difference
			// the machine's noise can explain.
			scale = fmt.Sprintf("; the upstream's own p99 in the same run: %.3f ms", direct.p99/1000)
		}
		fmt.Fprintf(&b, "| added p99 ≤ 0.2 ms at half of saturation | %+.3f ms over reverse_proxy (case b%s) | %s |\n", added, scale, verdict(added <= 0.2))
	} else {
		b.WriteString("| added p99 ≤ 0.2 ms at half of saturation | not measured | — |\n")
	}
	if relay, rp := relayVsRP("a128", "relay"); relay != nil && rp != nil && rp.cpuPer1k() > 0 && relay.cpuPer1k() >= 0 {
		ratio := relay.cpuPer1k() / rp.cpuPer1k()
		fmt.Fprintf(&b, "| CPU per request ≤ 1.2× reverse_proxy | %.2f× (case a, 128 connections) | %s |\n", ratio, verdict(ratio <= 1.2))
	} else {
		b.WriteString("| CPU per request ≤ 1.2× reverse_proxy | not measured | — |\n")
	}
	if relay, rp := relayVsRP("c", "relay"); relay != nil && rp != nil && rp.cpuPer1k() > 0 && relay.cpuPer1k() >= 0 {
		ratio := relay.cpuPer1k() / rp.cpuPer1k()
		fmt.Fprintf(&b, "| CPU per request ≤ 1.2× reverse_proxy, streams | %.2f× (case c, 50-chunk streams) | %s |\n", ratio, verdict(ratio <= 1.2))
	}
	if relay, rp := relayVsRP("e", "relay+cache"); relay != nil && rp != nil && rp.rps > 0 {
		ratio := relay.rps / rp.rps
		fmt.Fprintf(&b, "| cache hit ≥ 2× reverse_proxy throughput | %.2f× (case e) | %s |\n", ratio, verdict(ratio >= 2))
	} else {
		b.WriteString("| cache hit ≥ 2× reverse_proxy throughput | not measured (case e skipped) | — |\n")
	}
	b.WriteString(streamsTarget(streams))
	return b.String()
}

const (
	docBegin = "<!-- bench:begin (written by bench/run.sh; edit outside these markers) -->"
	docEnd   = "<!-- bench:end -->"
)

func cmdTable(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	results := fs.String("results", "", "results TSV (required)")
	streamsFile := fs.String("streams", "", "results TSV of the open-streams case (f), if it ran")
	sharedFile := fs.String("shared", "", "results TSV of the shared-Redis case (h), if it ran")
	machine := fs.String("machine", "", "markdown file describing the machine and the run, put above the table")
	doc := fs.String("doc", "", "markdown file whose generated section (between the bench markers) is replaced; created if missing")
	_ = fs.Parse(args)
	if *results == "" {
		return errors.New("-results is required")
	}
	rows, err := readRows(*results)
	if err != nil {
		return err
	}
	var streams []*streamRow
	if *streamsFile != "" {
		if streams, err = readStreamRows(*streamsFile); err != nil {
			return err
		}
	}
	var shared []*sharedRow
	if *sharedFile != "" {
		if shared, err = readSharedRows(*sharedFile); err != nil {
			return err
		}
	}
	table := renderTable(rows, streams, shared)
	fmt.Print(table)
	if *doc == "" {
		return nil
	}
	var section strings.Builder
	section.WriteString(docBegin + "\n\n")
	if *machine != "" {
		m, err := os.ReadFile(*machine)
		if err != nil {
			return err
		}
		section.Write(m)
		section.WriteString("\n")
	}
	section.WriteString(table)
	section.WriteString("\n" + docEnd)

	old, err := os.ReadFile(*doc)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var out string
	text := string(old)
	i, j := strings.Index(text, docBegin), strings.Index(text, docEnd)
	switch {
	case len(old) == 0:
		out = "# Benchmarks\n\n" + section.String() + "\n"
	case i >= 0 && j > i:
		out = text[:i] + section.String() + text[j+len(docEnd):]
	default:
		out = strings.TrimRight(text, "\n") + "\n\n" + section.String() + "\n"
	}
	return os.WriteFile(*doc, []byte(out), 0o644)
}
