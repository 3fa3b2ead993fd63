package main

import (
	"fmt"
	"strings"
)

// The shared-Redis case (h) has its own TSV, with a header line naming the
// columns:
//
//	case label target conns requests seconds rps p50_us p99_us p999_us errors cpu_ticks clk_tck capacity_rps upstream_429 upstream_429_window note
//
// One row per relay instance (target relay-1, relay-2, ...: its load
// generator's figures and the instance's CPU), one for redis-server (its
// CPU; requests is every instance's answers), and one for the upstream
// (target upstream: requests is its 2xx answers in a window inside the
// measurement, seconds that window, capacity_rps the pool's limit in
// requests per second, upstream_429 its rate-limit answers over the whole
// case and upstream_429_window those in the window). -1 is "not measured".

type sharedRow struct {
	caseID, label, target       string
	conns, requests             int64
	seconds, rps                float64
	p50, p99, p999              float64
	errors                      int64
	cpuTicks, clkTck            float64
	capacity                    float64
	upstream429, upstream429Win int64
	note                        string
}

func readSharedRows(path string) ([]*sharedRow, error) {
	var rows []*sharedRow
	err := readTSV(path, func(get func(string) string, num func(string) float64) {
		rows = append(rows, &sharedRow{
			caseID: get("case"), label: get("label"), target: get("target"),
			conns: int64(num("conns")), requests: int64(num("requests")), seconds: num("seconds"), rps: num("rps"),
			p50: num("p50_us"), p99: num("p99_us"), p999: num("p999_us"), errors: int64(num("errors")),
			cpuTicks: num("cpu_ticks"), clkTck: num("clk_tck"), capacity: num("capacity_rps"),
			upstream429: int64(num("upstream_429")), upstream429Win: int64(num("upstream_429_window")),
			note: get("note"),
		})
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// renderShared is the table of case h: each instance, their total, Redis and
// the upstream, then a line on the pool's capacity and the upstream's 429s.
func renderShared(rows []*sharedRow) string {
	var b strings.Builder
	b.WriteString("| case | target | conns | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s / 1k req |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	cpu := func(ticks, clk float64, requests int64) string {
		if ticks < 0 || clk <= 0 || requests <= 0 {
			return "—"
		}
		return fmt.Sprintf("%.3f", ticks/clk/float64(requests)*1000)
	}
	var notes []string
	type total struct {
		conns, requests, errors int64
		rps, ticks, clk         float64
		n                       int
		label                   string
	}
	totals := map[string]*total{}
	flush := func(id string) {
		t := totals[id]
		if t == nil || t.n == 0 {
			return
		}
		fmt.Fprintf(&b, "| %s | relays, total | %d | %.0f | | | | %d | %s |\n", t.label, t.conns, t.rps, t.errors, cpu(t.ticks, t.clk, t.requests))
		t.n = 0
	}
	last := ""
	for _, r := range rows {
		if r.caseID != last {
			flush(last)
			last = r.caseID
		}
		t := totals[r.caseID]
		if t == nil {
			t = &total{label: r.label}
			totals[r.caseID] = t
		}
		switch {
		case r.target == "skipped":
			fmt.Fprintf(&b, "| %s | *skipped* | | | | | | | |\n", r.label)
			notes = append(notes, fmt.Sprintf("- %s: skipped — %s", r.label, r.note))
			continue
		case strings.HasPrefix(r.target, "relay"):
			fmt.Fprintf(&b, "| %s | %s | %d | %.0f | %s | %s | %s | %d | %s |\n", r.label, r.target, r.conns, r.rps,
				ms(r.p50), ms(r.p99), ms(r.p999), r.errors, cpu(r.cpuTicks, r.clkTck, r.requests))
			t.n++
			t.conns += r.conns
			t.requests += r.requests
			t.errors += r.errors
			t.rps += r.rps
			t.clk = r.clkTck
			if r.cpuTicks < 0 || t.ticks < 0 {
				t.ticks = -1
			} else {
				t.ticks += r.cpuTicks
			}
		case r.target == "upstream":
			flush(r.caseID)
			fmt.Fprintf(&b, "| %s | upstream (2xx, central %.1f s) | | %.0f | | | | | — |\n", r.label, r.seconds, r.rps)
			n := fmt.Sprintf("- %s: the upstream answered %.0f req/s", r.label, r.rps)
			if r.capacity > 0 && r.rps >= 0 {
				n += fmt.Sprintf(" of the pool's capacity of %.0f req/s: **%.1f%% of the capacity used**", r.capacity, 100*r.rps/r.capacity)
			}
			verdict := "none, as required"
			if r.upstream429 != 0 {
				verdict = "**not 0**"
			}
			n += fmt.Sprintf("; upstream 429s: %d over the whole case (%d in the window), %s", r.upstream429, r.upstream429Win, verdict)
			if r.note != "" {
				n += "; " + r.note
			}
			notes = append(notes, n)
			continue
		default: // redis-server and other helpers: CPU only
			flush(r.caseID)
			fmt.Fprintf(&b, "| %s | %s | | | | | | | %s |\n", r.label, r.target, cpu(r.cpuTicks, r.clkTck, r.requests))
		}
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("- %s, %s: %s", r.label, r.target, r.note))
		}
	}
	flush(last)
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}
