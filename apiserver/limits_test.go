package apiserver

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestNonceCacheAgainstModel drives the replay cache through random
// traffic with time moving on (entries expire, shards are swept) and
// compares every answer with a plain map: a nonce is refused exactly while
// the request that used it could still pass the time window, per key; a
// request outside the window is refused as stale.
func TestNonceCacheAgainstModel(t *testing.T) {
	const window = int64(time.Second)
	c := newNonceCache(1<<20, window) // never under pressure here
	c.perKey = 1 << 20                // nor any key at its share
	model := map[string]int64{}       // key\x00nonce -> the first request's timestamp
	r := rand.New(rand.NewPCG(1, 2))
	now := int64(1_700_000_000e9)
	keys := []string{"k1", "k2", "k3"}
	for i := 0; i < 50_000; i++ {
		now += int64(r.IntN(200)) * int64(time.Microsecond)
		key, nonce := keys[r.IntN(len(keys))], strconv.Itoa(r.IntN(3000))
		ts := now - int64(r.IntN(int(2*window))) + window/2 // sometimes outside the window
		id := key + "\x00" + nonce
		want := nonceNew
		switch first, ok := model[id]; {
		case ts < now-window:
			want = nonceStale
		case ok && first >= now-window:
			want = nonceReplayed
		}
		if got := c.add(key, nonce, ts, now); got != want {
			t.Fatalf("op %d: add(%s, %s, ts %d) at %d = %d, want %d", i, key, nonce, ts, now, got, want)
		}
		if want == nonceNew {
			model[id] = ts
		}
	}
	live := 0
	for _, ts := range model {
		if ts >= now-window {
			live++
		}
	}
	// Expiry is lazy (per key on its next request, per shard on a sweep):
	// never fewer entries than live ones, never more than ever accepted.
	if n := c.len(); n < live || n > len(model) {
		t.Fatalf("cache holds %d entries; %d are live, %d were ever accepted", n, live, len(model))
	}
}

// TestNonceCacheBoundedWithoutRefusals (issue 15, finding 1): however many
// keys send however much, memory stays bounded, a key's fresh requests
// (signed later than its earlier ones) are always accepted, and no earlier
// request is ever accepted twice.
func TestNonceCacheBoundedWithoutRefusals(t *testing.T) {
	const window = int64(5 * time.Minute)
	const max, keys = 512, 200
	c := newNonceCache(max, window)
	c.perKey = 32
	r := rand.New(rand.NewPCG(3, 4))
	now := int64(1_700_000_000e9)
	type sent struct {
		key, nonce string
		ts         int64
	}
	var history []sent
	clock := make([]int64, keys) // each key's own clock, a little off the server's
	for k := range clock {
		clock[k] = now - int64(r.IntN(int(time.Minute)))
	}
	for i := 0; i < 100_000; i++ {
		step := int64(r.IntN(int(time.Millisecond)))
		now += step
		k := r.IntN(keys)
		if k%10 == 0 { // a tenth of the keys send ten times as much
			k = r.IntN(keys/10) * 10
		}
		clock[k] += step + 1
		key := "key-" + strconv.Itoa(k)
		nonce := strconv.Itoa(i)
		if got := c.add(key, nonce, clock[k], now); got != nonceNew {
			t.Fatalf("op %d: a fresh request of %s was refused (%d) with %d entries held", i, key, got, c.len())
		}
		history = append(history, sent{key, nonce, clock[k]})
		if n := c.len(); n > max+nonceMinShare*keys {
			t.Fatalf("op %d: %d entries held; bound %d", i, n, max+nonceMinShare*keys)
		}
		// Replay an earlier request now and then: always refused.
		if i%7 == 0 {
			old := history[r.IntN(len(history))]
			if old.ts >= now-window {
				if got := c.add(old.key, old.nonce, old.ts, now); got == nonceNew {
					t.Fatalf("op %d: the replay of %+v was accepted", i, old)
				}
			}
		}
	}
	// Out of order within the share: two requests signed t1 < t2 that
	// arrive t2 first are both accepted.
	now += int64(time.Hour)
	if c.add("late", "b", now-10, now) != nonceNew || c.add("late", "a", now-20, now) != nonceNew {
		t.Fatal("two requests arriving out of order were refused")
	}
	// After the window, everything from before is forgotten.
	for range nonceSweepEvery {
		c.add("late", strconv.Itoa(r.Int()), now, now)
	}
	if n := c.len(); n > c.perKey {
		t.Fatalf("%d entries left an hour later", n)
	}
}
