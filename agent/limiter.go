package agent

import (
	"context"
	"sync"
)

// limiter is a counting semaphore whose size can change at runtime (a
// config reload), FIFO among waiters.
type limiter struct {
	mu      sync.Mutex
	limit   int
	used    int
	waiters []chan struct{}
}

func newLimiter(n int) *limiter { return &limiter{limit: max(n, 1)} }

// Acquire takes a slot or returns ctx's error.
func (l *limiter) Acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.used < l.limit && len(l.waiters) == 0 {
		l.used++
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, w := range l.waiters {
			if w == ch {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		// Granted while we were giving up: pass the slot on.
		l.used--
		l.grant()
		return ctx.Err()
	}
}

// Release returns a slot.
func (l *limiter) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used--
	l.grant()
}

// SetLimit resizes; running holders keep their slots.
func (l *limiter) SetLimit(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit = max(n, 1)
	l.grant()
}

// InUse is the number of held slots.
func (l *limiter) InUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used
}

// Limit is the current size.
func (l *limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

func (l *limiter) grant() {
	for l.used < l.limit && len(l.waiters) > 0 {
		ch := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.used++
		close(ch)
	}
}
