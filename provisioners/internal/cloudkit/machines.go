package cloudkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Machines is the lifecycle that the backends whose machines carry the
// contract in tags (DigitalOcean droplets, Vultr instances) share: taking
// over the machine of an interrupted attempt, creation with the SSH key
// object held, lookup, listing, deletion with the key object, power off
// and on, uptime. M is the API library's machine type; the backend gives
// its API calls in API and Keys and its words in Noun and NameKey. Error messages
// and log lines name the machine as the API does ("droplet 42",
// "instance 7f3c...").
type Machines[M any] struct {
	API     MachineAPI[M]
	Noun    string // what the API calls a machine: "droplet", "instance"
	NameKey string // what it calls its name, in log lines: "name", "label"
	Log     *slog.Logger
	Now     func() time.Time
	Poll    time.Duration // interval of polling the API
	Timeout time.Duration // how long one wait may take (action_timeout_seconds)
	Keys    *Keys         // the SSH key objects
	Starts  Starts
}

// MachineAPI is what Machines needs of a backend's API: its calls on
// machines of type M, the fields it reads of a
// machine, and the backend's classification of API errors. Calls return
// the API's errors unclassified unless said otherwise.
type MachineAPI[M any] struct {
	// ID, Name and Status of a machine (the id as the agent reports it:
	// the instance's ExternalID).
	ID, Name, Status func(*M) string
	Tags             func(*M) []string
	// Instance converts a machine.
	Instance func(*M) provisioners.Instance
	// Older reports whether a was created before b: of several machines
	// tagged for a contract (never made by the agent) the oldest is its.
	Older func(a, b *M) bool

	// ParseID checks an external id, the error saying what one looks like.
	ParseID func(externalID string) error
	// Get reads a machine by id; nil, nil if the API says it does not
	// exist.
	Get func(ctx context.Context, id string) (*M, error)
	// ListTagged returns every machine tagged tag (all pages).
	ListTagged func(ctx context.Context, tag string) ([]M, error)
	// Delete asks the API to delete a machine; not found is no error.
	Delete func(ctx context.Context, m *M) error
	// RefuseForeign fails (classified) if a machine the agent did not tag
	// for the contract holds its name (HostName): it is never adopted.
	RefuseForeign func(ctx context.Context, name string) error
	// Resume brings a machine of the contract left by an interrupted
	// attempt to running (classified errors). An error wrapping
	// ErrReplace: it cannot be taken over and is replaced; another: the
	// attempt fails.
	Resume func(ctx context.Context, req provisioners.Request, access Access, m *M) (provisioners.Instance, error)

	// AfterDestroy, if set, runs when a machine is gone (before its key
	// object is released).
	AfterDestroy func(ctx context.Context, m *M)

	// Classify wraps an API error with what was being done (op), a hint,
	// and whether a retry can help.
	Classify func(op string, err error) error
}

// Waits fills in the defaults of a config section's
// action_timeout_seconds and poll_interval_ms and returns them as
// durations: how long one wait may take, how often the API is polled.
func Waits(timeoutSeconds, pollMs *int) (timeout, poll time.Duration) {
	if *timeoutSeconds <= 0 {
		*timeoutSeconds = config.DefaultCloudActionTimeout
	}
	if *pollMs <= 0 {
		*pollMs = config.DefaultCloudPollIntervalMs
	}
	return time.Duration(*timeoutSeconds) * time.Second, time.Duration(*pollMs) * time.Millisecond
}

// ErrReplace is wrapped by a MachineAPI.Resume error when the machine found
// for the contract cannot be taken over (its root password died with the
// crashed attempt, or its creation failed): it is removed and a new one
// created in the same call.
var ErrReplace = errors.New("replace it")

// Classified is how every backend classifies an error before it looks
// for its API's error: err itself if it is classified already, a
// retryable timeout naming action_timeout_seconds (timeoutSeconds) for a
// deadline, nil for anything else.
func Classified(op string, err error, timeoutSeconds int) error {
	var pe *provisioners.Error
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return provisioners.Retryable(fmt.Errorf("%s: timed out (action_timeout_seconds = %d): %w", op, timeoutSeconds, err))
	}
	return nil
}

// Begin is the start of a provision: it checks the contract id (which it
// returns normalised in req) and the requester's access, takes over the
// contract's machine left by an interrupted attempt, and checks that no
// foreign machine holds the name of a new one. done: the machine was taken
// over (inst) or the attempt failed (err); else a new machine is to be
// created.
func (c *Machines[M]) Begin(ctx context.Context, req *provisioners.Request) (access Access, inst provisioners.Instance, done bool, err error) {
	cid, err := ContractID(req.ContractID)
	if err != nil {
		return Access{}, provisioners.Instance{}, true, err
	}
	req.ContractID = cid
	if access, err = RequestAccess(*req); err != nil {
		return Access{}, provisioners.Instance{}, true, err
	}
	req.Step("looking for an existing " + c.Noun)
	existing, err := c.find(ctx, cid)
	if err != nil {
		return access, provisioners.Instance{}, true, c.API.Classify("look up the contract's "+c.Noun, err)
	}
	if existing != nil {
		c.Log.Info("found existing "+c.Noun+" for contract, resuming it", "contract", cid, c.Noun, c.API.ID(existing), "status", c.API.Status(existing))
		inst, err = c.API.Resume(ctx, *req, access, existing)
		if !errors.Is(err, ErrReplace) {
			return access, inst, true, err
		}
		c.Log.Info("replacing the "+c.Noun+" of an interrupted attempt", "contract", cid, c.Noun, c.API.ID(existing), "why", err)
		req.Step("removing the " + c.Noun + " of an interrupted attempt")
		if err := c.Destroy(ctx, existing); err != nil {
			return access, provisioners.Instance{}, true, err
		}
	}
	if err := c.API.RefuseForeign(ctx, HostName(cid)); err != nil {
		return access, provisioners.Instance{}, true, err
	}
	return access, provisioners.Instance{}, false, nil
}

// Create creates a machine named name with create (see Keys.Create).
func (c *Machines[M]) Create(ctx context.Context, req provisioners.Request, access Access, name string,
	create func(ctx context.Context, keyID string) (*M, error)) (*M, error) {
	var m *M
	err := c.Keys.Create(ctx, req, access, c.Noun+" "+name, func(ctx context.Context, keyID string) (err error) {
		m, err = create(ctx, keyID)
		return err
	})
	return m, err
}

// Cleanup removes a machine of a failed provision, even if ctx is done.
func (c *Machines[M]) Cleanup(ctx context.Context, m *M) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Timeout)
	defer cancel()
	if err := c.Destroy(ctx, m); err != nil {
		c.Log.Error("could not remove the "+c.Noun+" of a failed provision; reconcile will report it", c.Noun, c.API.ID(m), c.NameKey, c.API.Name(m), "err", err)
	}
}

// Destroy deletes a machine, waits for it to be gone and releases its SSH
// key object.
func (c *Machines[M]) Destroy(ctx context.Context, m *M) error {
	id := c.API.ID(m)
	if err := c.API.Delete(ctx, m); err != nil {
		return c.API.Classify("delete "+c.Noun+" "+id, err)
	}
	if err := c.waitGone(ctx, id); err != nil {
		return c.API.Classify("delete "+c.Noun+" "+id, err)
	}
	c.Starts.Forget(id)
	if c.API.AfterDestroy != nil {
		c.API.AfterDestroy(ctx, m)
	}
	if keyID := KeyIDFromTags(c.API.Tags(m)); keyID != "" {
		c.Keys.Release(ctx, keyID)
	}
	return nil
}

// waitGone polls until a deleted machine is no longer there.
func (c *Machines[M]) waitGone(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	for {
		m, err := c.API.Get(ctx, id)
		if err != nil {
			return err
		}
		if m == nil {
			return nil
		}
		if err := Sleep(ctx, c.Poll); err != nil {
			return fmt.Errorf("%s %s is still being deleted: %w", c.Noun, id, err)
		}
	}
}

// Managed returns a machine by external id, refusing one the agent did
// not create, with what it was asked to do (verb) in the error (nil, nil:
// gone).
func (c *Machines[M]) Managed(ctx context.Context, externalID, verb string) (*M, error) {
	if err := c.API.ParseID(externalID); err != nil {
		return nil, provisioners.Permanent(err)
	}
	id := strings.TrimSpace(externalID)
	m, err := c.API.Get(ctx, id)
	if err != nil {
		return nil, c.API.Classify("look up "+c.Noun+" "+id, err)
	}
	if m == nil {
		c.Starts.Forget(id)
		return nil, nil
	}
	if !HasTag(c.API.Tags(m), TagManaged) {
		return nil, provisioners.Permanent(fmt.Errorf("%s %s (%s) is not tagged %s, so dc-agent did not create it; refusing to %s it", c.Noun, id, c.API.Name(m), TagManaged, verb))
	}
	return m, nil
}

// Terminate implements provisioners.Provisioner.
func (c *Machines[M]) Terminate(ctx context.Context, externalID string) error {
	m, err := c.Managed(ctx, externalID, "delete")
	if err != nil || m == nil {
		return err
	}
	return c.Destroy(ctx, m)
}

// Pause powers a machine off (verb: the API's word for it, "power off"),
// unless it is off already; powerOff returns classified errors.
func (c *Machines[M]) Pause(ctx context.Context, externalID, verb string, off func(*M) bool, powerOff func(ctx context.Context, m *M) error) error {
	m, err := c.Managed(ctx, externalID, verb)
	if err != nil {
		return err
	}
	if m == nil {
		return provisioners.Permanent(fmt.Errorf("%s %s no longer exists", c.Noun, externalID))
	}
	c.Starts.Forget(c.API.ID(m))
	if off(m) {
		return nil
	}
	return powerOff(ctx, m)
}

// Resume powers a machine on (verb: the API's word for it, "power on")
// unless it runs, and waits until it is ready; powerOn returns classified
// errors, waitReady unclassified ones.
func (c *Machines[M]) Resume(ctx context.Context, externalID, verb string, running func(*M) bool,
	powerOn func(ctx context.Context, m *M) error, waitReady func(ctx context.Context, id string) error) error {
	m, err := c.Managed(ctx, externalID, verb)
	if err != nil {
		return err
	}
	if m == nil {
		return provisioners.Permanent(fmt.Errorf("%s %s no longer exists", c.Noun, externalID))
	}
	id := c.API.ID(m)
	if !running(m) {
		if err := powerOn(ctx, m); err != nil {
			return err
		}
		c.Starts.Mark(id, c.Now())
	}
	if err := waitReady(ctx, id); err != nil {
		return c.API.Classify("start "+c.Noun+" "+c.API.Name(m), err)
	}
	return nil
}

// WaitReady polls a machine until ready says it is, or fails it, within
// Timeout. stuck words the error of a wait that timed out, given the last
// state seen (nil: none).
func (c *Machines[M]) WaitReady(ctx context.Context, id string, ready func(*M) (bool, error), stuck func(last *M, err error) error) (*M, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var last *M
	for {
		m, err := c.API.Get(ctx, id)
		if err == nil && m == nil {
			return nil, provisioners.Retryable(fmt.Errorf("%s %s disappeared while waiting for it to run", c.Noun, id))
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, stuck(last, err)
			}
			return nil, err
		}
		last = m
		if ok, err := ready(m); err != nil {
			return nil, err
		} else if ok {
			return m, nil
		}
		if err := Sleep(ctx, c.Poll); err != nil {
			return nil, stuck(last, err)
		}
	}
}

// Uptime is the health of a running machine: its uptime since its start,
// recorded or (first seen running) from startedAt.
func (c *Machines[M]) Uptime(id string, startedAt func() time.Time) provisioners.Health {
	since, ok := c.Starts.Get(id)
	if !ok {
		since = startedAt()
		c.Starts.Mark(id, since)
	}
	return provisioners.Health{Status: provisioners.Healthy, UptimeSeconds: int64(max(0, c.Now().Sub(since).Seconds()))}
}

// GetInstance implements provisioners.Provisioner.
func (c *Machines[M]) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	cid, err := ContractID(contractID)
	if err != nil {
		return nil, err
	}
	m, err := c.find(ctx, cid)
	if err != nil {
		return nil, c.API.Classify("look up the contract's "+c.Noun, err)
	}
	if m == nil {
		return nil, nil
	}
	inst := c.API.Instance(m)
	return &inst, nil
}

// find returns the contract's machine (nil if none); of several (never
// made by the agent) the oldest.
func (c *Machines[M]) find(ctx context.Context, cid string) (*M, error) {
	list, err := c.API.ListTagged(ctx, ContractTag(cid))
	if err != nil {
		return nil, err
	}
	var best *M
	for i := range list {
		if ContractIDFromTags(c.API.Tags(&list[i])) != cid {
			continue
		}
		if best == nil || c.API.Older(&list[i], best) {
			best = &list[i]
		}
	}
	return best, nil
}

// List implements provisioners.Provisioner: every machine tagged
// dc-agent.
func (c *Machines[M]) List(ctx context.Context) ([]provisioners.Instance, error) {
	list, err := c.API.ListTagged(ctx, TagManaged)
	if err != nil {
		return nil, c.API.Classify("list "+c.Noun+"s", err)
	}
	out := make([]provisioners.Instance, 0, len(list))
	for i := range list {
		inst := c.API.Instance(&list[i])
		if inst.ContractID == "" {
			c.Log.Warn("managed "+c.Noun+" has no valid contract tag; skipping it", c.Noun, c.API.ID(&list[i]), c.NameKey, c.API.Name(&list[i]))
			continue
		}
		out = append(out, inst)
	}
	return out, nil
}
