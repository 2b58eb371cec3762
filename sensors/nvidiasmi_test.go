package sensors

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseNvidiaSMI(t *testing.T) {
	devs, err := ParseNvidiaSMI([]byte("0, GPU-aaa, 61234, 81559\n 1 ,GPU-bbb,12040,81559 \r\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 {
		t.Fatalf("got %d devices", len(devs))
	}
	d := devs[0]
	if d.ID != "0" || d.Index != 0 || d.UUID != "GPU-aaa" || d.Used != 61234*MiB || d.Total != 81559*MiB || d.Err != "" {
		t.Fatalf("device 0: %+v", d)
	}
	if devs[1].ID != "1" || devs[1].UUID != "GPU-bbb" || devs[1].Used != 12040*MiB {
		t.Fatalf("device 1: %+v", devs[1])
	}

	devs, err = ParseNvidiaSMI([]byte("0, 70000, 81559\n"))
	if err != nil || len(devs) != 1 || devs[0].UUID != "" || devs[0].Used != 70000*MiB {
		t.Fatalf("3-column: %+v %v", devs, err)
	}

	devs, err = ParseNvidiaSMI([]byte("0, GPU-a, 1, 2\n1, GPU-b, [N/A], [N/A]\n2, [N/A], [Not Supported], 81559\n3, GPU-d, 5, 0\n"))
	if err != nil {
		t.Fatalf("placeholders are per device, not a parse error: %v", err)
	}
	if devs[0].Err != "" || devs[1].Err != "memory.used is [N/A]" || devs[2].Err != "memory.used is [Not Supported]" ||
		devs[2].UUID != "" || devs[3].Err != "memory.total is 0" {
		t.Fatalf("per-device errors: %+v", devs)
	}
}

func TestParseNvidiaSMIErrors(t *testing.T) {
	long := "0, GPU-a, " + strings.Repeat("9", 300) + "x, 1"
	for _, tc := range []struct{ in, want string }{
		{"", "no devices in output"},
		{"\n \n", "no devices in output"},
		{"index, uuid, memory.used [MiB], memory.total [MiB]", `line 1: bad GPU index in "index, uuid`},
		{"0, GPU-a, 12 MiB, 80 MiB", `memory.used "12 MiB": not a number`},
		{"0, GPU-a, 12", `memory.used "GPU-a": not a number`},
		{"0, GPU-a, 1, 2, 3", "want 3 or 4 comma-separated fields, got 5"},
		{"0, GPU-a, NaN, 2", `memory.used "NaN": not a number`},
		{"0, GPU-a, -1, 2", `memory.used "-1": not a number`},
		{"0, GPU-a, 0x10, 2", `memory.used "0x10": not a number`},
		{"0, GPU-a, 1, 2\n0, GPU-b, 1, 2", "line 2: GPU index 0 listed twice"},
		{"-1, GPU-a, 1, 2", "bad GPU index"},
		{"0, GPU a, 1, 2", "bad uuid"},
		{long, "…"},
	} {
		_, err := ParseNvidiaSMI([]byte(tc.in))
		if err == nil {
			t.Fatalf("%q: no error", tc.in)
		}
		mustContain(t, err.Error(), tc.want)
		if len(err.Error()) > 250 {
			t.Fatalf("error not bounded (%d bytes): %s", len(err.Error()), err)
		}
	}
}

func FuzzParseNvidiaSMI(f *testing.F) {
	for _, s := range []string{
		"0, GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60, 61234, 81559\n1, GPU-0a7e, 12040, 81559\n",
		"0, 70000, 81559\n",
		"1, GPU-b, [N/A], [N/A]\n",
		"0, GPU-a, 5, 0\n",
		"index, uuid, memory.used [MiB], memory.total [MiB]\n",
		"0, GPU-a, 1e308, 1e-308\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		devs, err := ParseNvidiaSMI(in)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Fatalf("unbounded error: %d bytes", len(err.Error()))
			}
			return
		}
		if len(devs) == 0 {
			t.Fatal("no error and no devices")
		}
		for _, d := range devs {
			if d.Err != "" {
				continue
			}
			if !(d.Total > 0) || !(d.Used >= 0) || math.IsInf(d.Total, 0) || math.IsInf(d.Used, 0) || d.ID != strconv.Itoa(d.Index) {
				t.Fatalf("bad device without error: %+v", d)
			}
		}
	})
}

func BenchmarkParseNvidiaSMI(b *testing.B) {
	out, err := os.ReadFile(filepath.Join("testdata", "smi_ok.sh"))
	if err != nil {
		b.Fatal(err)
	}
	var csv []byte // the quoted lines of the stand-in's printf
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "'"); i >= 0 && strings.Contains(l, "GPU-") {
			csv = append(csv, l[i+1:strings.LastIndex(l, "'")]+"\n"...)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseNvidiaSMI(csv); err != nil {
			b.Fatal(err)
		}
	}
}
