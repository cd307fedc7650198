// Package provisioners defines what a backend must do to turn a contract into
// an instance, and the registry the agent asks for a backend by type name.
// The agent loop never imports a backend; backends never import the agent.
package provisioners

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
)

// Request is everything a backend needs to provision one contract. Sizes are
// already parsed; Config is the offering's provisioner_config with the
// contract's instance_config merged over it (MergeConfig: a contract sets
// only the keys the backend's ConfigPolicy lets it).
type Request struct {
	ContractID          string
	OfferingID          string
	CPUCores            int   // 0: backend default
	MemoryMB            int64 // 0: backend default
	StorageGB           int64 // 0: backend default
	RequesterSSHPubkey  string
	Config              map[string]any
	PostProvisionScript string
	ProductType         string
	DatacenterCity      string
	// WantPassword is true when the agent can seal a root password for the
	// requester; when false the backend must not set one (SSH key only).
	WantPassword bool
	// Progress reports the current step ("cloning", "waiting for IP"); it
	// is never nil when called by the agent.
	Progress func(step string)
}

// Step calls r.Progress if set.
func (r Request) Step(step string) {
	if r.Progress != nil {
		r.Progress(step)
	}
}

// ConfigString returns a string from the merged config, or def.
func (r Request) ConfigString(key, def string) string {
	if v, ok := r.Config[key]; ok {
		if s, ok := v.(string); ok && s != "" {
			return s
		}
	}
	return def
}

// Instance is a provisioned instance. RootPassword is plaintext here; the
// agent seals it before it leaves the process.
type Instance struct {
	ExternalID        string
	ContractID        string
	Name              string
	IPAddress         string
	IPv6Address       string
	SSHPort           int
	RootPassword      string
	AdditionalDetails map[string]any
	Status            string // backend's own status word ("running", "stopped")
	CreatedAt         time.Time
}

// Health statuses, as reported to the API.
const (
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
	Unknown   = "unknown"
)

// Health is one health observation of an instance.
type Health struct {
	Status        string
	UptimeSeconds int64
	LatencyMs     *int
	Reason        string
}

// Features tell the agent what a backend can do, so it adapts instead of
// assuming (a manual backend cannot terminate; a script may not list).
type Features struct {
	Terminate bool // Terminate removes the instance
	List      bool // List returns every instance this agent made (reconcile)
	Health    bool // HealthCheck observes real state
	GetByID   bool // GetInstance finds an instance by contract id
	Inventory bool // implements Inventory
	// Manual: the backend does not create anything; the contract stays for
	// the provider to complete and is never failed automatically.
	Manual bool
	// Pause: implements Pauser (reconcile's pause stops, never destroys).
	Pause bool
	// ResetPassword: implements PasswordResetter (tenant password resets).
	ResetPassword bool
	// RotateSSHKey: implements KeyRotator (tenant SSH key rotations).
	RotateSSHKey bool
}

// Provisioner is one backend.
type Provisioner interface {
	// Type is the registry name ("proxmox", ...).
	Type() string
	Features() Features
	// Provision creates the instance for req and waits until it is usable.
	// It must be idempotent by contract id: if an instance for the contract
	// already exists (a crash mid-provision) it is reused or replaced,
	// never duplicated. On failure it removes what it created, except
	// when ctx was cancelled with ErrAbandoned (see Abandoned).
	Provision(ctx context.Context, req Request) (Instance, error)
	// Terminate removes an instance; a missing instance is success.
	Terminate(ctx context.Context, externalID string) error
	// HealthCheck observes an instance.
	HealthCheck(ctx context.Context, externalID string) (Health, error)
	// GetInstance finds the instance of a contract (nil, nil if none).
	GetInstance(ctx context.Context, contractID string) (*Instance, error)
	// List returns every instance this agent manages on the backend.
	List(ctx context.Context) ([]Instance, error)
}

// HealthBatcher is implemented by backends that can observe many
// instances with one request, so a health round of a thousand contracts
// costs one backend call, not a thousand. The result holds what the batch
// could tell (by external id); the agent checks the rest one by one with
// HealthCheck. A nil map (and no error) means "check them one by one".
type HealthBatcher interface {
	HealthCheckMany(ctx context.Context, externalIDs []string) (map[string]Health, error)
}

// Pauser is implemented by backends that can stop an instance without
// destroying it and start it again: the API pauses a contract during a
// payment dispute (reconcile's pause) and resumes it afterwards.
type Pauser interface {
	// Pause stops the instance and keeps its disks; a stopped instance is success.
	Pause(ctx context.Context, externalID string) error
	// Resume starts a paused instance; a running one is success.
	Resume(ctx context.Context, externalID string) error
}

// PasswordResetter is implemented by backends that can set a running
// instance's root password through their own control channel (guest agent,
// cloud API, container exec) — never by logging in to the tenant's machine.
type PasswordResetter interface {
	// ResetPassword sets the login user's password of contractID's instance
	// externalID to password and returns
	// the password now in force: password itself, or one the backend's
	// API chose (Hetzner's reset_password picks its own). Setting the same
	// password again must be harmless: after a crash the agent repeats the
	// call with the password it journaled.
	ResetPassword(ctx context.Context, contractID, externalID, password string) (string, error)
}

// KeyRotator is implemented by backends that can add the tenant's new SSH
// key to a running instance through their own control channel.
type KeyRotator interface {
	// RotateSSHKey adds pubkey (one line from CheckSSHKeyLine) to the login
	// user's authorized_keys, with the owner and mode sshd accepts; a key
	// already there is not added twice (AddAuthorizedKey).
	RotateSSHKey(ctx context.Context, contractID, externalID, pubkey string) error
}

// Resources is a backend's capacity, reported with the heartbeat (the
// agent turns it into the live API's ResourceInventory). A backend fills
// what it can see; zero values mean "cannot tell".
type Resources struct {
	CPUModel     string
	CPUCores     int // physical cores (0: unknown; the agent then reports CPUThreads)
	CPUThreads   int // logical CPUs
	CPUMhz       int
	MemoryMB     int64
	MemoryFreeMB int64 // not committed to instances
	StoragePools []StoragePool
	// GPUs are the devices the backend can pass through to an instance;
	// nil where it cannot see any (or has no passthrough).
	GPUs      []GPU
	Templates []Template
	Nodes     []string
}

// StoragePool is one storage of Resources.
type StoragePool struct {
	Name    string
	Type    string // "lvmthin", "zfspool", "dir", "overlay2", …
	TotalGB int64
	AvailGB int64
}

// GPU is one PCI display or accelerator device.
type GPU struct {
	PCIID    string // "0000:01:00.0"
	Name     string
	Vendor   string
	MemoryMB int // 0: unknown
}

// Template is one image an instance can be made from: a VM template's
// VMID and name.
type Template struct {
	VMID int
	Name string
}

// Inventory is implemented by backends that can report capacity.
type Inventory interface {
	Resources(ctx context.Context) (Resources, error)
}

// Closer is implemented by backends holding connections.
type Closer interface {
	Close() error
}

// Error carries whether a failed provision may be retried (a capacity or
// transient problem) or not (bad contract data). Backends wrap their errors
// with Retryable or Permanent; an unwrapped error counts as retryable.
//
// Error() is the provider's message, for the agent's log: it may name host
// paths, quote a script's output or a hypervisor's answer. Tenant is what
// the tenant may read of the same failure (provisioning_failed.error,
// health details): no host paths, no script stderr, no secrets. Set it with
// ForTenant wherever the log message could carry any of those.
type Error struct {
	Err           error
	RetryPossible bool
	Tenant        string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Retryable marks err as worth retrying later.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, RetryPossible: true}
}

// Permanent marks err as not fixable by retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, RetryPossible: false}
}

// ForTenant returns err carrying msg as the text the tenant is shown in
// place of err's own; err's retry verdict is kept (unmarked: retryable).
func ForTenant(err error, msg string) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, RetryPossible: RetryPossible(err), Tenant: msg}
}

// TenantMessage is the text of err that may leave the agent where the
// tenant reads it: the tenant message of the outermost Error that has one.
// An error without one is shown as it is, which is right for the
// contract-data refusals the agent itself makes; a backend whose errors can
// carry host details must give them a tenant message (ForTenant).
func TenantMessage(err error) string {
	for e := err; e != nil; {
		var pe *Error
		if !errors.As(e, &pe) {
			break
		}
		if pe.Tenant != "" {
			return pe.Tenant
		}
		e = pe.Err
	}
	return err.Error()
}

// RetryPossible reports whether a provision error may succeed on retry.
func RetryPossible(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryPossible
	}
	return true
}

// InstanceName is the deterministic name of a contract's instance.
func InstanceName(contractID string) string { return "dc-" + strings.ToLower(contractID) }

// ContractIDFromName is the inverse of InstanceName ("" if name is not one).
func ContractIDFromName(name string) string {
	id, ok := strings.CutPrefix(name, "dc-")
	if !ok || !identity.IsLowerHex64(id) {
		return ""
	}
	return id
}

// Deps are what a backend factory may use besides its config section.
type Deps struct {
	Logger *slog.Logger
	// Config is the whole agent config (for resolving relative paths and
	// reading *_file secrets).
	Config *config.Config
	// Timeouts bound the backend's own long waits; a zero field keeps
	// DefaultTimeouts'. The agent passes its Timing's (the test suite's are
	// shorter); settings from the config come first.
	Timeouts Timeouts
}

// Timeouts are the long waits a backend decides on itself.
type Timeouts struct {
	// Task bounds one backend task (a Proxmox start, resize, destroy).
	Task time.Duration
	// Create bounds making one instance (a Proxmox clone).
	Create time.Duration
	// RetryWait is the first wait before retrying a busy backend (a
	// Proxmox lock timeout), doubling from there.
	RetryWait time.Duration
}

// DefaultTimeouts are the production values.
var DefaultTimeouts = Timeouts{Task: 3 * time.Minute, Create: 15 * time.Minute, RetryWait: 2 * time.Second}

// Factory builds a backend from its config section.
type Factory func(pc config.ProvisionerConfig, deps Deps) (Provisioner, error)

// Registry maps type names to factories.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register adds a factory; registering a name twice panics (a programming error).
func (r *Registry) Register(typ string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.factories[typ]; dup {
		panic("provisioners: duplicate registration of " + typ)
	}
	r.factories[typ] = f
}

// Types lists registered type names, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.factories))
	for t := range r.factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// New builds the backend for pc.
func (r *Registry) New(pc config.ProvisionerConfig, deps Deps) (Provisioner, error) {
	r.mu.RLock()
	f, ok := r.factories[pc.Type]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("provisioner type %q is not available in this build (available: %s)", pc.Type, strings.Join(r.Types(), ", "))
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := f(pc, deps)
	if err != nil {
		return nil, fmt.Errorf("%s provisioner: %w", pc.Type, err)
	}
	return p, nil
}

// ErrAbandoned is the cause of a Provision context the agent cancels
// because its lock on the contract is gone (another agent took it, or it
// ran out while the API was unreachable): another agent may be finishing
// the contract with what this one made, so the backend stops at once and
// removes nothing (the new owner adopts or replaces it).
var ErrAbandoned = errors.New("the contract's lock is gone: another agent may own it now")

// Abandoned reports whether ctx was cancelled with ErrAbandoned.
func Abandoned(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrAbandoned) }
