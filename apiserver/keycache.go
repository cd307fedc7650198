package apiserver

import (
	"sync"
	"sync/atomic"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// keyCache keeps the decoded public keys (identity.Verifier) of keys that
// have signed a valid request, so that the agents' requests, the same keys
// over and over, skip decoding the key: the hex and the point decompression
// (≈ 3 µs of a ≈ 45 µs verification). Bounded: when full, an arbitrary
// entry makes room (only keys with a valid signature get in, and a miss only
// costs the decoding the cache saves). Reads take no lock.
type keyCache struct {
	m   sync.Map // header value -> *cachedKey
	n   atomic.Int64
	max int64
	mu  sync.Mutex // serialises puts (the bound)
}

type cachedKey struct {
	v   *identity.Verifier
	hex string // lowercase hex: the key as the store and logs spell it
	// lastHB is this key's last heartbeat body and what it decoded to:
	// an agent sends the same body again and again between changes.
	lastHB atomic.Pointer[hbMemo]
}

type hbMemo struct {
	body []byte
	hb   dcapi.Heartbeat
}

// maxMemoBody bounds a remembered heartbeat body (a typical one is 100–300
// bytes; the memory bound is keys × this).
const maxMemoBody = 1 << 10

const defaultKeyCacheSize = 16384

func newKeyCache(max int) *keyCache {
	return &keyCache{max: int64(max)}
}

// get returns the entry for the key header value keyHex, or nil.
func (c *keyCache) get(keyHex string) *cachedKey {
	if v, ok := c.m.Load(keyHex); ok {
		return v.(*cachedKey)
	}
	return nil
}

// put remembers k under the header value keyHex.
func (c *keyCache) put(keyHex string, k *cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, loaded := c.m.Swap(keyHex, k); loaded {
		return
	}
	if c.n.Add(1) <= c.max {
		return
	}
	c.m.Range(func(old, _ any) bool {
		if old.(string) == keyHex {
			return true
		}
		c.m.Delete(old)
		c.n.Add(-1)
		return false
	})
}

func (c *keyCache) len() int { return int(c.n.Load()) }
