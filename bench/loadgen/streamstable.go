package main

import (
	"fmt"
	"strings"
)

// The open-streams case (f) has its own TSV, one row per proxy, with a
// header line naming the columns:
//
//	case label target n opened first held errors ended_early open_s ttfe_p99_us rss_idle_kb rss_open_kb note
//
// n is the number of streams asked for; opened, first and held are as
// `loadgen streams` counts them; rss_idle_kb and rss_open_kb are the proxy's
// VmRSS before the streams and the highest sample while they were open.

type streamRow struct {
	caseID, label, target               string
	n, opened, first, held, errs, early int64
	openSecs, ttfeP99                   float64
	rssIdleKB, rssOpenKB                int64
	note                                string
}

// kibPerStream is (RSS open - RSS idle) / held streams, in KiB; -1 if unknown.
func (r *streamRow) kibPerStream() float64 {
	if r.rssIdleKB < 0 || r.rssOpenKB < 0 || r.held <= 0 {
		return -1
	}
	return float64(r.rssOpenKB-r.rssIdleKB) / float64(r.held)
}

func readStreamRows(path string) ([]*streamRow, error) {
	var rows []*streamRow
	err := readTSV(path, func(get func(string) string, num func(string) float64) {
		rows = append(rows, &streamRow{
			caseID: get("case"), label: get("label"), target: get("target"),
			n: int64(num("n")), opened: int64(num("opened")), first: int64(num("first")), held: int64(num("held")),
			errs: int64(num("errors")), early: int64(num("ended_early")),
			openSecs: num("open_s"), ttfeP99: num("ttfe_p99_us"),
			rssIdleKB: int64(num("rss_idle_kb")), rssOpenKB: int64(num("rss_open_kb")), note: get("note"),
		})
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// renderStreams is the table of case f: what holding the streams open cost
// each proxy in resident memory.
func renderStreams(rows []*streamRow) string {
	var b strings.Builder
	b.WriteString("| case | target | streams asked | opened (2xx) | got a first event | held through the RSS samples | errors | ended early | all opened in, s | first event p99, ms | proxy RSS idle MiB | proxy RSS open MiB | RSS per open stream KiB | per stream ÷ reverse_proxy |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	var rp *streamRow
	for _, r := range rows {
		if r.target == "reverse_proxy" {
			rp = r
		}
	}
	var notes []string
	for _, r := range rows {
		if r.target == "skipped" {
			fmt.Fprintf(&b, "| %s | *skipped* | | | | | | | | | | | | |\n", r.label)
			notes = append(notes, fmt.Sprintf("- %s: skipped — %s", r.label, r.note))
			continue
		}
		mib := func(kb int64) string {
			if kb < 0 {
				return "—"
			}
			return fmt.Sprintf("%.1f", float64(kb)/1024)
		}
		per, ratio := "—", "—"
		if k := r.kibPerStream(); k >= 0 {
			per = fmt.Sprintf("%.1f", k)
			if rp != nil && r != rp && rp.kibPerStream() > 0 {
				ratio = fmt.Sprintf("%.2f", k/rp.kibPerStream())
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %.1f | %s | %s | %s | %s | %s |\n",
			r.label, r.target, r.n, r.opened, r.first, r.held, r.errs, r.early, r.openSecs, ms(r.ttfeP99),
			mib(r.rssIdleKB), mib(r.rssOpenKB), per, ratio)
		if r.note != "" {
			notes = append(notes, fmt.Sprintf("- %s, %s: %s", r.label, r.target, r.note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}

// streamsTarget is the line of the targets table for 10,000 open streams.
func streamsTarget(rows []*streamRow) string {
	const name = "10,000 open streams at ≤ 64 KiB RSS each"
	var relay, rp *streamRow
	for _, r := range rows {
		switch r.target {
		case "relay":
			relay = r
		case "reverse_proxy":
			rp = r
		}
	}
	if relay == nil || relay.kibPerStream() < 0 {
		return "| " + name + " | not measured (case f did not run) | — |\n"
	}
	k := relay.kibPerStream()
	measured := fmt.Sprintf("%.1f KiB per stream with %d streams held (case f", k, relay.held)
	if rp != nil && rp.kibPerStream() >= 0 {
		measured += fmt.Sprintf("; reverse_proxy: %.1f KiB", rp.kibPerStream())
	}
	measured += ")"
	verdict := "met"
	switch {
	case k > 64:
		verdict = "**not met**"
	case relay.held < 10000:
		verdict = fmt.Sprintf("met at %d streams; 10,000 not shown", relay.held)
	}
	return "| " + name + " | " + measured + " | " + verdict + " |\n"
}
