package latency

import (
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/levels"
)

// answer is one request to the simulated upstream: when it started, how
// long its answer took, and its size in bytes.
type answer struct {
	start, took time.Duration
	size        int64
}

// run plays answers, recorded at their end (as the request path does for
// a whole answer, whose first byte is its end), second by second for span
// on the level's clock, with the requests still unanswered in flight. It
// returns the transitions.
func (s *sim) run(answers []answer, span time.Duration, whole bool) {
	t0 := s.now
	for sec := time.Second; sec <= span; sec += time.Second {
		inflight := int64(0)
		for i, a := range answers {
			end := a.start + a.took
			switch {
			case end > sec-time.Second && end <= sec:
				if whole {
					s.l.RecordWhole(a.took, a.size, uint32(i))
				} else {
					s.l.Record(a.took, uint32(i))
				}
			case a.start <= sec && end > sec:
				inflight++
			}
		}
		s.now = t0.Add(sec)
		s.l.Sample(s.now, levels.Inputs{Second: true, Learn: !s.l.h.Tripped(), InFlight: inflight}, s.report)
	}
}

// healthyLongAnswers is a healthy load of long answers that are not
// streamed, as Ollama clients often ask: for the first half of span, one
// every 3 s, 8 to 9.4 s each for 6 to 8 KB, among short ones of 0.3 s,
// never more than a few at once; then one every 20 s, which leaves whole
// windows with a request in flight for 8.5 s and no answer.
func healthyLongAnswers(span time.Duration) []answer {
	var as []answer
	for i := range int(span / 2 / time.Second / 3) {
		at := time.Duration(i) * 3 * time.Second
		frac := time.Duration(i % 5)
		as = append(as, answer{start: at + 400*time.Millisecond, took: 8*time.Second + frac*350*time.Millisecond, size: 6000 + int64(frac)*500})
		if i%2 == 0 {
			as = append(as, answer{start: at + 1200*time.Millisecond, took: 300 * time.Millisecond, size: 400})
		}
	}
	for at := span / 2; at < span; at += 20 * time.Second {
		as = append(as, answer{start: at + 1500*time.Millisecond, took: 9400 * time.Millisecond, size: 7900})
	}
	return as
}

// Long answers that are not streamed, at a healthy load, at the defaults
// (ceiling 8s, window 10s): judged by what is normal for their size, they
// do not trip the level; judged as first bytes, the same load would trip
// it on the ceiling.
func TestWholeLongAnswersAtHealthyLoadDoNotTrip(t *testing.T) {
	const span = 3 * time.Minute
	s := newSim(t, Config{})
	s.run(healthyLongAnswers(span), span, true)
	if len(s.trs) != 0 {
		t.Fatalf("whole answers at a healthy load: transitions %+v, want none", s.trs)
	}
	if st := s.l.Status(s.now); st.WholeSlowestS < 9 || st.WholeSlowestS > 10 {
		t.Fatalf("status %+v: want the slowest whole answer, 9.4 s", st)
	}

	as := newSim(t, Config{})
	as.run(healthyLongAnswers(span), span, false)
	if len(as.trs) == 0 || !strings.Contains(as.trs[0].Reason, "ceiling") {
		t.Fatalf("the same answers as first bytes: transitions %+v, want a trip on the ceiling", as.trs)
	}
}

// A hung upstream still trips the level where long whole answers are
// normal: requests in flight with no answer for longer than twice the
// slowest whole answer, all window long.
func TestWholeAnswersThenHangTrips(t *testing.T) {
	s := newSim(t, Config{})
	s.run(healthyLongAnswers(time.Minute), time.Minute, true)
	if len(s.trs) != 0 {
		t.Fatalf("healthy: transitions %+v", s.trs)
	}
	// Then nothing answers, with four requests in flight: once they have
	// had no answer for over 2 × 9.4 s, the window that ends is a hang.
	for sec := 1; sec <= 30 && len(s.trs) == 0; sec++ {
		s.now = s.now.Add(time.Second)
		s.l.Sample(s.now, levels.Inputs{Second: true, Learn: true, InFlight: 4}, s.report)
	}
	if len(s.trs) != 1 || !s.trs[0].Tripped || !strings.Contains(s.trs[0].Reason, "no response for") ||
		s.trs[0].Value <= 2*9.4 || s.trs[0].Value > 2*9.4+10 {
		t.Fatalf("a hang after whole answers: transitions %+v, want a trip for no response over 18.8 s, within a window of it", s.trs)
	}
}

// A whole answer is judged as its time less what its size adds, at normal
// speed, to a short answer's; a short one, or one of a size never seen,
// as it took.
func TestWholeAnswerJudgedBySize(t *testing.T) {
	var f sizeFloors
	if got := f.judged(9*time.Second, 8000); got != 0 {
		t.Fatalf("the first answer of its size, no short one known: judged %v, want 0 (it is the fastest)", got)
	}
	if got := f.judged(300*time.Millisecond, 400); got != 300*time.Millisecond {
		t.Fatalf("a short answer: judged %v, want its time", got)
	}
	// 8000 bytes normally take 9 s, a short answer 0.3 s: its size adds
	// 8.7 s, and a 12 s answer of that size is judged as 3.3 s.
	if got := f.judged(12*time.Second, 7900); got != 3300*time.Millisecond {
		t.Fatalf("a slow long answer: judged %v, want 3.3s", got)
	}
	// Slower short answers are judged as they are: a queue shows.
	if got := f.judged(2*time.Second, 400); got != 2*time.Second {
		t.Fatalf("a slow short answer: judged %v", got)
	}
	for _, c := range []struct {
		n    int64
		want int
	}{{0, 0}, {3, 3}, {4, 8}, {5, 9}, {7, 11}, {8, 12}, {1024, 40}, {1279, 40}, {1280, 41}, {1 << 62, sizeClasses - 1}} {
		if got := sizeClass(c.n); got != c.want {
			t.Errorf("sizeClass(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
