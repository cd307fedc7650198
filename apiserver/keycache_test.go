package apiserver

import (
	"fmt"
	"testing"
)

func TestKeyCacheBounded(t *testing.T) {
	c := newKeyCache(3)
	for i := 0; i < 10; i++ {
		c.put(fmt.Sprint(i), &cachedKey{hex: fmt.Sprint(i)})
		if c.len() > 3 {
			t.Fatalf("after %d puts the cache holds %d keys, more than its bound 3", i+1, c.len())
		}
	}
	if c.get("9") == nil {
		t.Fatal("the newest key was evicted to make room for itself")
	}
	c.put("9", &cachedKey{hex: "nine"}) // replacing a present key evicts nothing
	if c.len() != 3 || c.get("9").hex != "nine" {
		t.Fatalf("replacing key 9: len %d, entry %+v", c.len(), c.get("9"))
	}
	n := 0
	c.m.Range(func(_, _ any) bool { n++; return true })
	if n != 3 {
		t.Fatalf("the cache counts %d keys but holds %d", c.len(), n)
	}
	if c.get("absent") != nil {
		t.Fatal("an absent key has an entry")
	}
}
