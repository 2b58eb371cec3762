package shard

import (
	"sync"
	"testing"
)

// Writers on many goroutines and shards lose no count.
func TestCounterConcurrentAdds(t *testing.T) {
	c := NewCounter()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				c.Add(uint32(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if n := c.Load(); n != 8000 {
		t.Fatalf("counted %d of 8000", n)
	}
	if n := testing.AllocsPerRun(100, func() { c.Add(7) }); n != 0 {
		t.Fatalf("Add allocates %v", n)
	}
}

func BenchmarkCounterAdd(b *testing.B) {
	c := NewCounter()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var i uint32
		for pb.Next() {
			c.Add(i)
			i++
		}
	})
}
