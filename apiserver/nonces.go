package apiserver

import (
	"crypto/sha256"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// nonceCache refuses replayed requests (PROTOCOL.md §2 step 5) with bounded
// memory, without ever refusing a key's fresh requests because the cache
// is full.
//
// Only keys the server knows get entries: the caller records a nonce after
// the request is authorized (a delegated agent, a registered provider, or a
// registration whose delegation signature checked out), so made-up keys
// never take space (issue 15, finding 1).
//
// Each key holds at most perKey entries, and while the cache holds max
// entries or more, a key that already holds minShare keeps no more than it
// has. Making room evicts the key's own entry with the oldest timestamp and
// raises the key's floor to that timestamp: from then on the key's requests
// signed at or before the floor are refused. A replay of an evicted nonce
// therefore stays refused, and the key's new requests (signed later than
// its recorded ones, as a client's clock moves on) are always accepted; only
// a request of that key that arrives after perKey (or minShare, when full)
// newer ones is refused, and only while its key sends that much. Memory is
// at most max + minShare × (keys seen in the last 10 minutes) entries of 24
// bytes, and keys only exist where a provider made them (a registered
// provider, a delegation), at the rate the unknown-key limit lets through.
//
// An entry is needed only while its request could still pass the time
// window: it is dropped once its timestamp is more than window in the past
// (the window refuses such requests anyway, and so does add).
type nonceCache struct {
	shards   [64]nonceShard
	seed     maphash.Seed
	window   int64 // ns
	perKey   int
	minShare int
	max      int64
	total    atomic.Int64
	lastFull atomic.Int64 // when a full sweep last ran, ns
}

type nonceShard struct {
	mu        sync.Mutex
	keys      map[string]*keyNonces
	adds      int
	lastSweep int64
}

// keyNonces is one key's recorded requests.
type keyNonces struct {
	entries []nonceEntry // unordered
	floor   int64        // timestamps at or before it are refused
}

type nonceEntry struct {
	id [16]byte // SHA-256 of the nonce, truncated
	ts int64    // the request's X-Timestamp
}

type nonceResult int

const (
	nonceNew nonceResult = iota
	nonceReplayed
	// nonceStale: signed at or before the key's floor (or outside the
	// window): it may be the replay of a forgotten nonce.
	nonceStale
)

const (
	defaultNoncePerKey = 256
	nonceMinShare      = 8
	nonceSweepEvery    = 4096 // adds per shard between sweeps
)

func newNonceCache(max int, window int64) *nonceCache {
	c := &nonceCache{seed: maphash.MakeSeed(), window: window, perKey: defaultNoncePerKey, minShare: nonceMinShare, max: int64(max)}
	for i := range c.shards {
		c.shards[i].keys = map[string]*keyNonces{}
	}
	return c
}

// add records the nonce of a request of key signed at tsNs, at nowNs.
func (c *nonceCache) add(key, nonce string, tsNs, nowNs int64) nonceResult {
	if tsNs < nowNs-c.window {
		return nonceStale
	}
	sum := sha256.Sum256([]byte(nonce))
	var id [16]byte
	copy(id[:], sum[:])
	if c.total.Load() >= c.max {
		// Under pressure, first drop what has expired anywhere (at most
		// once a second).
		if last := c.lastFull.Load(); nowNs-last > int64(time.Second) && c.lastFull.CompareAndSwap(last, nowNs) {
			for i := range c.shards {
				c.shards[i].mu.Lock()
				c.sweep(&c.shards[i], nowNs)
				c.shards[i].mu.Unlock()
			}
		}
	}
	sh := &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.adds++
	if sh.adds >= nonceSweepEvery || nowNs-sh.lastSweep > c.window {
		c.sweep(sh, nowNs)
	}
	k := sh.keys[key]
	if k == nil {
		k = &keyNonces{}
		sh.keys[key] = k
	} else {
		c.expire(k, nowNs)
	}
	if tsNs <= k.floor {
		return nonceStale
	}
	for i := range k.entries {
		if k.entries[i].id == id {
			return nonceReplayed
		}
	}
	if len(k.entries) >= c.perKey || len(k.entries) >= c.minShare && c.total.Load() >= c.max {
		oldest := k.oldest()
		if tsNs <= k.entries[oldest].ts {
			return nonceStale // it would be the one to make room
		}
		k.floor = max(k.floor, k.entries[oldest].ts)
		last := len(k.entries) - 1
		k.entries[oldest] = k.entries[last]
		k.entries = k.entries[:last]
		c.total.Add(-1)
	}
	k.entries = append(k.entries, nonceEntry{id: id, ts: tsNs})
	c.total.Add(1)
	return nonceNew
}

// oldest is the index of k's entry with the earliest timestamp.
func (k *keyNonces) oldest() int {
	o := 0
	for i := range k.entries {
		if k.entries[i].ts < k.entries[o].ts {
			o = i
		}
	}
	return o
}

// expire drops k's entries the time window refuses anyway.
func (c *nonceCache) expire(k *keyNonces, nowNs int64) {
	limit := nowNs - c.window
	kept := k.entries[:0]
	for _, e := range k.entries {
		if e.ts >= limit {
			kept = append(kept, e)
		}
	}
	if n := len(k.entries) - len(kept); n > 0 {
		clear(k.entries[len(kept):])
		k.entries = kept
		c.total.Add(-int64(n))
	}
	if k.floor < limit {
		k.floor = 0
	}
}

// sweep expires every key of the shard and forgets keys with nothing left.
func (c *nonceCache) sweep(sh *nonceShard, nowNs int64) {
	sh.adds, sh.lastSweep = 0, nowNs
	for key, k := range sh.keys {
		c.expire(k, nowNs)
		if len(k.entries) == 0 && k.floor == 0 {
			delete(sh.keys, key)
		}
	}
}

// len is the number of recorded nonces.
func (c *nonceCache) len() int { return int(c.total.Load()) }
