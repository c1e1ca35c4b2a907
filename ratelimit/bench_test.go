package ratelimit

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchKeys returns n distinct keys shaped like key ids.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key_" + strconv.Itoa(i*7919)
	}
	return keys
}

// BenchmarkAllow measures one decision on the real clock (time.Now), with
// every goroutine on one hot key, and spread over many existing keys.
func BenchmarkAllow(b *testing.B) {
	lim := Limit{600, time.Minute}
	b.Run("hot key", func(b *testing.B) {
		l := New(Options{})
		l.Allow("hot", lim, 1)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("hot", lim, 1)
			}
		})
	})
	b.Run("many keys", func(b *testing.B) {
		l := New(Options{})
		keys := benchKeys(1 << 16)
		for _, k := range keys {
			l.Allow(k, lim, 1)
		}
		var seq atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Add(1) * 104729
			for pb.Next() {
				i++
				l.Allow(keys[i&(1<<16-1)], lim, 1)
			}
		})
	})
	b.Run("tokens, many keys", func(b *testing.B) {
		l := New(Options{})
		tpm := Limit{1_000_000, time.Minute}
		keys := benchKeys(1 << 16)
		for _, k := range keys {
			l.Allow(k, tpm, 1)
		}
		var seq atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Add(1) * 104729
			for pb.Next() {
				i++
				l.Allow(keys[i&(1<<16-1)], tpm, 4096)
			}
		})
	})
}

// BenchmarkAdjust measures a settlement's correction, alternately a refund
// and an extra charge, over many existing keys.
func BenchmarkAdjust(b *testing.B) {
	lim := Limit{1_000_000, time.Minute}
	l := New(Options{})
	keys := benchKeys(1 << 16)
	for _, k := range keys {
		l.Allow(k, lim, 1000)
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1) * 104729
		for pb.Next() {
			i++
			delta := int64(-700)
			if i&1 == 0 {
				delta = 700
			}
			l.Adjust(keys[i&(1<<16-1)], lim, delta)
		}
	})
}

// BenchmarkSweep measures a sweep of 100,000 keys of which half are
// restored; the other half stays.
func BenchmarkSweep(b *testing.B) {
	lim := Limit{1, time.Second}
	keys := benchKeys(100_000)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		l, clock := newLimiter()
		for i, k := range keys {
			if i%2 == 0 {
				l.Allow(k, lim, 1)
			} else {
				l.Adjust(k, lim, 10)
			}
		}
		clock.Advance(time.Second)
		b.StartTimer()
		l.Sweep()
	}
}
