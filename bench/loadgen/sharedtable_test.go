package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSharedTable(t *testing.T) {
	dir := t.TempDir()
	head := "case\tlabel\ttarget\tconns\trequests\tseconds\trps\tp50_us\tp99_us\tp999_us\terrors\tcpu_ticks\tclk_tck\tcapacity_rps\tupstream_429\tupstream_429_window\tnote\n"
	tsv := head +
		"h\th. 3 relays\trelay-1\t64\t1000\t2\t500\t1000\t2000\t3000\t0\t20\t100\t-1\t-1\t-1\t\n" +
		"h\th. 3 relays\trelay-2\t32\t500\t2\t250\t1000\t2000\t3000\t0\t10\t100\t-1\t-1\t-1\t\n" +
		"h\th. 3 relays\tredis-server\t-1\t1500\t2\t-1\t-1\t-1\t-1\t-1\t15\t100\t-1\t-1\t-1\t\n" +
		"h\th. 3 relays\tupstream\t-1\t735\t1\t735\t-1\t-1\t-1\t-1\t-1\t100\t750\t0\t0\t10 keys × 4500 RPM\n"
	path := filepath.Join(dir, "shared.tsv")
	if err := os.WriteFile(path, []byte(tsv), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := readSharedRows(path)
	if err != nil {
		t.Fatal(err)
	}
	table := renderShared(rows)
	for _, want := range []string{
		"| h. 3 relays | relay-1 | 64 | 500 | 1.000 | 2.000 | 3.000 | 0 | 0.200 |",
		"| h. 3 relays | relays, total | 96 | 750 | | | | 0 | 0.200 |",
		"| h. 3 relays | redis-server | | | | | | | 0.100 |",
		"98.0% of the capacity used",
		"upstream 429s: 0 over the whole case (0 in the window), none, as required; 10 keys × 4500 RPM",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestAuxCPUNote(t *testing.T) {
	dir := t.TempDir()
	tsv := "case\tlabel\ttarget\trequests\tseconds\trps\tp50_us\tp99_us\tp999_us\terrors\tcpu_ticks\tclk_tck\trss_kb\tnote\taux_cpu_ticks\taux_name\n" +
		"g\tg. redis\tdirect\t1000\t1\t1000\t1000\t2000\t3000\t0\t-1\t100\t-1\t\t-1\t\n" +
		"g\tg. redis\treverse_proxy\t1000\t1\t1000\t1000\t2000\t3000\t0\t20\t100\t1024\t\t-1\t\n" +
		"g\tg. redis\trelay+redis\t1000\t1\t1000\t1000\t2000\t3000\t0\t20\t100\t1024\t\t10\tredis-server\n"
	path := filepath.Join(dir, "results.tsv")
	if err := os.WriteFile(path, []byte(tsv), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := readRows(path)
	if err != nil {
		t.Fatal(err)
	}
	table := renderTable(rows, nil, nil)
	want := "- g. redis, relay+redis: redis-server used 0.100 CPU s / 1k req besides the proxy's (not in the CPU column); proxy + redis-server: 0.300 s / 1k req, 1.50× reverse_proxy's"
	if !strings.Contains(table, want) {
		t.Errorf("table lacks %q:\n%s", want, table)
	}
	if strings.Count(table, "besides the proxy's") != 1 {
		t.Errorf("an aux note for a row without aux CPU:\n%s", table)
	}
}
