package apiserver

import (
	"sync"

	"github.com/decent-stuff/dc-agent/identity"
)

// keyCache keeps the decoded public keys (identity.Verifier) of keys that
// have signed a valid request, so that the agents' requests, the same keys
// over and over, skip decoding the key: the hex and the point decompression
// (≈ 3 µs of a ≈ 45 µs verification). Bounded: when full, an arbitrary
// entry makes room (only keys with a valid signature get in, and a miss only
// costs the decoding the cache saves).
type keyCache struct {
	mu  sync.RWMutex
	m   map[string]*cachedKey
	max int
}

type cachedKey struct {
	v   *identity.Verifier
	hex string // lowercase hex: the key as the store and logs spell it
}

const defaultKeyCacheSize = 16384

func newKeyCache(max int) *keyCache {
	return &keyCache{m: make(map[string]*cachedKey), max: max}
}

// get returns the entry for the key header value keyHex, or nil.
func (c *keyCache) get(keyHex string) *cachedKey {
	c.mu.RLock()
	k := c.m[keyHex]
	c.mu.RUnlock()
	return k
}

// put remembers k under the header value keyHex.
func (c *keyCache) put(keyHex string, k *cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[keyHex]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[keyHex] = k
}

func (c *keyCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
