package sensors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// nvidiaSMIArgs asks for the uuid too, so devices can be selected by UUID.
var nvidiaSMIArgs = []string{"--query-gpu=index,uuid,memory.used,memory.total", "--format=csv,noheader,nounits"}

const (
	maxSMIOutput = 1 << 20 // nvidia-smi prints ~80 bytes a GPU; more is not nvidia-smi
	maxSMIStderr = 512     // what of a failure's message goes into the reason
	smiWaitDelay = 200 * time.Millisecond
)

// smiSource runs nvidia-smi once a read.
type smiSource struct{ path string }

// NewNvidiaSMI is a source that runs the nvidia-smi binary at path.
func NewNvidiaSMI(path string) Source { return &smiSource{path: path} }

func (s *smiSource) Name() string { return "nvidia-smi" }
func (s *smiSource) Close() error { return nil }

func (s *smiSource) Read(ctx context.Context) ([]Device, error) {
	cmd := exec.CommandContext(ctx, s.path, nvidiaSMIArgs...)
	var stdout, stderr boundedBuffer
	stdout.max, stderr.max = maxSMIOutput, maxSMIStderr
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A grandchild holding the pipes open must not hang Wait past the kill.
	cmd.WaitDelay = smiWaitDelay
	killGroup(cmd)
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("killed: %w", ctx.Err())
	}
	if err != nil {
		msg := trimMsg(stderr.Bytes())
		if msg == "" { // nvidia-smi prints its own failures on stdout
			msg = trimMsg(stdout.Bytes())
		}
		if msg != "" {
			return nil, fmt.Errorf("%v: %s", err, msg)
		}
		return nil, err
	}
	if stdout.over {
		return nil, fmt.Errorf("output larger than %d bytes", maxSMIOutput)
	}
	return ParseNvidiaSMI(stdout.Bytes())
}

// ParseNvidiaSMI parses `--query-gpu=index,uuid,memory.used,memory.total
// --format=csv,noheader,nounits` output (also the 3-column index,used,total
// form), memory in MiB. A device whose memory reads "[N/A]" or similar comes
// back with Err set; output that is not this CSV at all is an error.
func ParseNvidiaSMI(out []byte) ([]Device, error) {
	var devs []Device
	seen := map[int]bool{}
	for n, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		var d Device
		switch len(f) {
		case 3:
			f = []string{f[0], "", f[1], f[2]}
		case 4:
			if !validUUID(f[1]) {
				return nil, fmt.Errorf("line %d: bad uuid in %q", n+1, clip(line))
			}
			if !strings.HasPrefix(f[1], "[") { // "[N/A]" is no UUID
				d.UUID = f[1]
			}
		default:
			return nil, fmt.Errorf("line %d: want 3 or 4 comma-separated fields, got %d: %q", n+1, len(f), clip(line))
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil || idx < 0 || idx > 1<<16 {
			return nil, fmt.Errorf("line %d: bad GPU index in %q", n+1, clip(line))
		}
		if seen[idx] {
			return nil, fmt.Errorf("line %d: GPU index %d listed twice", n+1, idx)
		}
		seen[idx] = true
		d.Index, d.ID = idx, strconv.Itoa(idx)
		used, uerr := smiMiB("memory.used", f[2])
		total, terr := smiMiB("memory.total", f[3])
		switch {
		case errors.Is(uerr, errGarbage) || errors.Is(terr, errGarbage):
			return nil, fmt.Errorf("line %d: %v", n+1, errors.Join(uerr, terr))
		case uerr != nil:
			d.Err = uerr.Error()
		case terr != nil:
			d.Err = terr.Error()
		case total <= 0:
			d.Err = fmt.Sprintf("memory.total is %s", f[3])
		default:
			d.Used, d.Total = used*MiB, total*MiB
		}
		devs = append(devs, d)
	}
	if len(devs) == 0 {
		return nil, errors.New("no devices in output")
	}
	return devs, nil
}

var errGarbage = errors.New("not a number")

// maxMiB (1 EiB) is far above any GPU; larger is garbage, not memory.
const maxMiB = 1 << 40

// smiMiB parses one memory field: a number, or a bracketed nvidia-smi
// placeholder such as "[N/A]" that marks just this device unreadable.
func smiMiB(field, s string) (float64, error) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && len(s) <= 64 {
		return 0, fmt.Errorf("%s is %s", field, s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0 && v <= maxMiB) || strings.ContainsAny(s, "xXpP_") {
		return 0, fmt.Errorf("%s %q: %w", field, clip(s), errGarbage)
	}
	return v, nil
}

// validUUID accepts what nvidia-smi prints ("GPU-…", "MIG-…") and placeholders.
func validUUID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c > '~' || c == '"' {
			return false
		}
	}
	return true
}

// clip bounds a quoted bad line to about 80 bytes.
func clip(s string) string { return clipN(s, 80) }

// clipN cuts s to at most n bytes on a rune boundary, marking the cut.
func clipN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func trimMsg(b []byte) string {
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b, []byte("?"))))
	return clipN(strings.Join(strings.Fields(s), " "), 200)
}

// boundedBuffer keeps the first max bytes and drops the rest, so a child
// that floods its output costs no memory and is never blocked on a pipe.
// (It must not embed bytes.Buffer: io.Copy would use its ReadFrom, unbounded.)
type boundedBuffer struct {
	buf  []byte
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - len(b.buf); room < n {
		b.over = true
		p = p[:max(room, 0)]
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *boundedBuffer) Bytes() []byte { return b.buf }
