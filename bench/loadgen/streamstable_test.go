package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStreamsTable(t *testing.T) {
	dir := t.TempDir()
	tsv := "case\tlabel\ttarget\tn\topened\tfirst\theld\terrors\tended_early\topen_s\tttfe_p99_us\trss_idle_kb\trss_open_kb\tnote\n" +
		"f\tf. 10000 open streams\treverse_proxy\t10000\t10000\t10000\t10000\t0\t0\t30.5\t1800000\t60000\t1020000\t\n" +
		"f\tf. 10000 open streams\trelay\t10000\t10000\t10000\t10000\t0\t0\t25.1\t1600000\t60000\t700000\t\n"
	path := filepath.Join(dir, "streams.tsv")
	if err := os.WriteFile(path, []byte(tsv), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := readStreamRows(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].kibPerStream() != 96 || rows[1].kibPerStream() != 64 {
		t.Fatalf("rows %+v %+v", rows[0], rows[1])
	}
	table := renderStreams(rows)
	if !strings.Contains(table, "| f. 10000 open streams | relay | 10000 | 10000 | 10000 | 10000 | 0 | 0 | 25.1 | 1600.000 | 58.6 | 683.6 | 64.0 | 0.67 |") {
		t.Errorf("table:\n%s", table)
	}
	if got := streamsTarget(rows); !strings.Contains(got, "64.0 KiB per stream with 10000 streams held (case f; reverse_proxy: 96.0 KiB) | met |") {
		t.Errorf("target line: %s", got)
	}
	rows[1].held, rows[1].rssOpenKB = 9968, 600000
	if got := streamsTarget(rows); !strings.Contains(got, "met at 9968 streams; 10,000 not shown") {
		t.Errorf("target line with fewer streams: %s", got)
	}
	if got := streamsTarget(nil); !strings.Contains(got, "not measured") {
		t.Errorf("target line without case f: %s", got)
	}
}
