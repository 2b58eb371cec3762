//go:build unix

package throttle

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkClockIdle is what the ticker costs an idle process: the CPU
// time the process spends per second of wall time with the ticker
// running and without, in one run.
func BenchmarkClockIdle(b *testing.B) {
	th, err := New(WithName("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer th.Close()
	for _, clk := range []string{"ticker", "system"} {
		if clk == "system" {
			stopClock()
			defer startClock()
		}
		b.Run(clk, func(b *testing.B) {
			var before, after syscall.Rusage
			start := time.Now()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			for range b.N {
				time.Sleep(time.Second)
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/time.Since(start).Seconds(), "cpu-µs/s")
		})
	}
}
