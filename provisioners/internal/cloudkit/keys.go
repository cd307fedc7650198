package cloudkit

import (
	"context"
	"log/slog"
	"sync"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Keys is the bookkeeping of SSH key objects the cloud backends share: a
// key object is uploaded (or an existing one reused) for the requester's
// key just before a machine is created with it, and the agent's own key
// objects are deleted once no machine uses them. Its lock orders the two,
// so that a key object is never deleted between being chosen for a new
// machine and that machine's creation. The funcs are the backend's API
// calls; keyID is a key object's id as the API writes it.
type Keys struct {
	Log *slog.Logger
	// Ensure returns the id of the key object holding the requester's
	// key: one the account has, else a new one named KeyName(key)
	// (classified errors).
	Ensure func(ctx context.Context, a Access) (keyID string, err error)
	// InUse reports whether a machine was created with key object keyID.
	InUse func(ctx context.Context, keyID string) (bool, error)
	// Own reports whether key object keyID is one the agent uploaded:
	// only those are ever deleted.
	Own func(ctx context.Context, keyID string) (bool, error)
	// Delete deletes key object keyID; not found is no error.
	Delete func(ctx context.Context, keyID string) error
	// AfterRelease, if set, runs once key object keyID is used no more.
	AfterRelease func(ctx context.Context, keyID string)

	mu sync.Mutex
}

// Create runs create, the creation of a machine (what names it in the
// progress step: "droplet dc-..."), given the key object of the
// requester's key ("" without a key), which is kept from deletion
// meanwhile. If creation fails, a key object no machine uses is deleted
// again, and create's error returned as it is.
func (k *Keys) Create(ctx context.Context, req provisioners.Request, access Access, what string, create func(ctx context.Context, keyID string) error) error {
	k.mu.Lock()
	keyID := ""
	if access.HasKey() {
		req.Step("uploading the SSH key")
		var err error
		if keyID, err = k.Ensure(ctx, access); err != nil {
			k.mu.Unlock()
			return err
		}
	}
	req.Step("creating " + what)
	err := create(ctx, keyID)
	k.mu.Unlock()
	if err != nil && keyID != "" {
		k.Release(context.WithoutCancel(ctx), keyID)
	}
	return err
}

// Release deletes key object keyID if the agent uploaded it and no
// machine uses it any more. Keys the provider uploaded are never deleted.
// Failures are logged: a leftover key costs nothing and goes with the next
// machine that used it.
func (k *Keys) Release(ctx context.Context, keyID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	used, err := k.InUse(ctx, keyID)
	if err != nil {
		k.Log.Warn("could not check whether the SSH key is still used; keeping it", "key", keyID, "err", err)
		return
	}
	if used {
		return
	}
	if own, err := k.Own(ctx, keyID); err == nil && own {
		if err := k.Delete(ctx, keyID); err != nil {
			k.Log.Warn("could not delete unused SSH key", "key", keyID, "err", err)
		}
	}
	if k.AfterRelease != nil {
		k.AfterRelease(ctx, keyID)
	}
}
