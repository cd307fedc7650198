// Package demobackend is a pretend machine pool that speaks the script
// provisioner protocol (see provisioners/script), keeping its instances as
// files in a directory. `make demo`, the agent's process-level tests and the
// benchmarks run it as the provider's "script": a small wrapper script execs
// a Go binary (dc-demo itself, or demo-backend) with DC_DEMO_BACKEND=<dir>,
// and the binary calls MaybeRun first thing in main.
//
// It behaves like a careful real backend: provisioning is idempotent by
// contract id (a repeated provision reuses the instance), terminate of a
// missing instance succeeds, and concurrent calls are safe (flock). Knobs,
// all optional files in the directory:
//
//	delay        provision delay, a Go duration ("5s"); default 50ms
//	fail         if present, provisioning fails with its text (retryable)
//	fail-times   "N:text": the next N provisions fail with text (retryable)
//	kill-parent  if present, removed, and the caller (the agent) is
//	             SIGKILLed after the instance is created, before the answer
//	calls.log    written: one JSON line per call {time, action, contract_id}
//
// It also serves the tenant actions reset_password and rotate_ssh_key,
// recording the password's hash and the added keys in the instance.
package demobackend

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvVar names the state directory; when set, MaybeRun acts as the backend.
const EnvVar = "DC_DEMO_BACKEND"

// Instance is one pretend machine.
type Instance struct {
	ExternalID string    `json:"external_id"`
	Name       string    `json:"name"`
	ContractID string    `json:"contract_id"`
	IPAddress  string    `json:"ip_address"`
	SSHPort    int       `json:"ssh_port"`
	CPUCores   int       `json:"cpu_cores,omitempty"`
	MemoryMB   int64     `json:"memory_mb,omitempty"`
	StorageGB  int64     `json:"storage_gb,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	// Stopped: paused (the pause action); resume starts it again.
	Stopped bool `json:"stopped,omitempty"`
	// Tenant requests: the login password's SHA-256 (hex) and how often
	// reset_password set one; the keys rotate_ssh_key added, in order.
	PasswordHash   string   `json:"password_hash,omitempty"`
	PasswordSets   int      `json:"password_sets,omitempty"`
	AuthorizedKeys []string `json:"authorized_keys,omitempty"`
}

// PasswordHash is how the demo backend keeps a password.
func PasswordHash(pw string) string {
	h := sha256.Sum256([]byte(pw))
	return hex.EncodeToString(h[:])
}

// Call is one line of calls.log.
type Call struct {
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`
	ContractID string    `json:"contract_id,omitempty"`
	ExternalID string    `json:"external_id,omitempty"`
}

// MaybeRun runs the backend and exits if $DC_DEMO_BACKEND is set; it
// returns otherwise.
func MaybeRun() {
	dir := os.Getenv(EnvVar)
	if dir == "" {
		return
	}
	os.Exit(Main(dir, os.Stdin, os.Stdout, os.Stderr))
}

// WriteWrapper writes an executable sh script at path that runs exe as the
// backend for dir. exe and dir are fixed paths chosen by the caller (never
// contract data), quoted for the shell.
func WriteWrapper(path, exe, dir string) error {
	body := fmt.Sprintf("#!/bin/sh\n%s=%s exec %s\n", EnvVar, shellQuote(dir), shellQuote(exe))
	return os.WriteFile(path, []byte(body), 0o755)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type input struct {
	Action       string         `json:"action"`
	ContractID   *string        `json:"contract_id"`
	CPUCores     *int           `json:"cpu_cores"`
	MemoryMB     *int64         `json:"memory_mb"`
	StorageGB    *int64         `json:"storage_gb"`
	ExternalID   *string        `json:"external_id"`
	InstanceName *string        `json:"instance_name"`
	WantPassword *bool          `json:"want_password"`
	Config       map[string]any `json:"instance_config"`
	Password     *string        `json:"password"`
	SSHPubkey    *string        `json:"requester_ssh_pubkey"`
}

type output struct {
	Success       bool           `json:"success"`
	Instance      map[string]any `json:"instance,omitempty"`
	Instances     []Instance     `json:"instances,omitempty"`
	Health        map[string]any `json:"health,omitempty"`
	Error         string         `json:"error,omitempty"`
	RetryPossible *bool          `json:"retry_possible,omitempty"`
}

// Main handles one call: JSON on stdin, JSON on stdout. The exit status is
// 0 unless the call failed.
func Main(dir string, stdin io.Reader, stdout, stderr io.Writer) int {
	b := &Backend{Dir: dir}
	out := b.handle(stdin)
	_ = json.NewEncoder(stdout).Encode(out)
	if !out.Success {
		fmt.Fprintln(stderr, "demo backend:", out.Error)
		return 1
	}
	return 0
}

// Backend is the state directory.
type Backend struct{ Dir string }

func (b *Backend) handle(stdin io.Reader) output {
	var in input
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&in); err != nil {
		return fail("bad input: "+err.Error(), false)
	}
	if err := os.MkdirAll(filepath.Join(b.Dir, "instances"), 0o755); err != nil {
		return fail(err.Error(), true)
	}
	cid := deref(in.ContractID)
	b.logCall(Call{Time: time.Now(), Action: in.Action, ContractID: cid, ExternalID: deref(in.ExternalID)})
	switch in.Action {
	case "provision":
		return b.provision(in)
	case "terminate":
		id := deref(in.ExternalID)
		if id == "" {
			return fail("terminate needs external_id", false)
		}
		err := b.locked(func() error {
			for _, inst := range b.list() {
				if inst.ExternalID == id {
					return os.Remove(b.path(inst.Name))
				}
			}
			return nil // already gone: success
		})
		if err != nil {
			return fail(err.Error(), true)
		}
		return output{Success: true}
	case "pause", "resume":
		return b.update(deref(in.ExternalID), func(inst *Instance) { inst.Stopped = in.Action == "pause" })
	case "health_check":
		id := deref(in.ExternalID)
		for _, inst := range b.list() {
			if inst.ExternalID == id && inst.Stopped {
				return output{Success: true, Health: map[string]any{"status": "unhealthy", "reason": "instance is stopped"}}
			}
			if inst.ExternalID == id {
				return output{Success: true, Health: map[string]any{"status": "healthy", "uptime_seconds": int64(time.Since(inst.CreatedAt) / time.Second)}}
			}
		}
		return output{Success: true, Health: map[string]any{"status": "unhealthy", "reason": "instance " + id + " does not exist"}}
	case "get_instance":
		if inst := b.byContract(cid); inst != nil {
			return output{Success: true, Instance: instanceJSON(*inst, "")}
		}
		return output{Success: true}
	case "list":
		return output{Success: true, Instances: b.list()}
	case "reset_password", "rotate_ssh_key":
		return b.tenantRequest(in)
	}
	return fail(fmt.Sprintf("unknown action %q", in.Action), false)
}

func (b *Backend) provision(in input) output {
	cid := deref(in.ContractID)
	name := deref(in.InstanceName)
	if cid == "" || name == "" {
		return fail("provision needs contract_id and instance_name", false)
	}
	if v, ok := in.Config["fail"].(string); ok && v != "" {
		return fail(v, false)
	}
	if msg, err := os.ReadFile(filepath.Join(b.Dir, "fail")); err == nil {
		return fail(strings.TrimSpace(string(msg)), true)
	}
	if msg, failNow := b.failTimes(); failNow {
		return fail(msg, true)
	}
	delay := 50 * time.Millisecond
	if d, err := os.ReadFile(filepath.Join(b.Dir, "delay")); err == nil {
		if v, err := time.ParseDuration(strings.TrimSpace(string(d))); err == nil {
			delay = v
		}
	}
	// The slow part runs outside the lock, so provisions overlap as on a real pool.
	time.Sleep(delay)
	var inst Instance
	err := b.locked(func() error {
		if cur := b.byContract(cid); cur != nil {
			inst = *cur // idempotent: the instance of this contract already exists
			return nil
		}
		n := len(b.list()) + 1
		inst = Instance{ExternalID: "demo-" + randHex(6), Name: name, ContractID: cid, IPAddress: fmt.Sprintf("10.77.%d.%d", n/250, n%250+2),
			SSHPort: 22, CPUCores: derefInt(in.CPUCores), MemoryMB: derefInt64(in.MemoryMB), StorageGB: derefInt64(in.StorageGB), CreatedAt: time.Now()}
		return b.write(inst)
	})
	if err != nil {
		return fail(err.Error(), true)
	}
	if err := os.Remove(filepath.Join(b.Dir, "kill-parent")); err == nil {
		// A crash of the agent right after the machine exists, before it
		// hears about it: the hardest case for crash safety.
		_ = syscall.Kill(os.Getppid(), syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
	}
	pw := ""
	if in.WantPassword != nil && *in.WantPassword {
		pw = "pw-" + randHex(12) // a reused instance gets a fresh password, as after a reset
	}
	return output{Success: true, Instance: instanceJSON(inst, pw)}
}

// write stores an instance (under the lock).
func (b *Backend) write(inst Instance) error {
	data, err := json.Marshal(inst)
	if err != nil {
		return err
	}
	tmp := b.path(inst.Name) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, b.path(inst.Name))
}

// failTimes counts down the fail-times knob ("N:text"): true and the text
// while N > 0.
func (b *Backend) failTimes() (string, bool) {
	msg, fails := "", false
	_ = b.locked(func() error {
		p := filepath.Join(b.Dir, "fail-times")
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		n, text, _ := strings.Cut(strings.TrimSpace(string(data)), ":")
		left, err := strconv.Atoi(n)
		if err != nil || left <= 0 {
			return os.Remove(p)
		}
		msg, fails = text, true
		if left == 1 {
			return os.Remove(p)
		}
		return os.WriteFile(p, []byte(fmt.Sprintf("%d:%s", left-1, text)), 0o644)
	})
	return msg, fails
}

// tenantRequest sets the password (reset_password) or adds the key
// (rotate_ssh_key, once) of an instance; a missing instance is a failure.
func (b *Backend) tenantRequest(in input) output {
	return b.update(deref(in.ExternalID), func(inst *Instance) {
		if in.Action == "reset_password" {
			inst.PasswordHash = PasswordHash(deref(in.Password))
			inst.PasswordSets++
		} else if k := deref(in.SSHPubkey); !slices.Contains(inst.AuthorizedKeys, k) {
			inst.AuthorizedKeys = append(inst.AuthorizedKeys, k)
		}
	})
}

// update changes instance id with change and stores it (under the lock); a
// missing instance is a failure.
func (b *Backend) update(id string, change func(*Instance)) output {
	var found bool
	err := b.locked(func() error {
		for _, inst := range b.list() {
			if inst.ExternalID != id {
				continue
			}
			found = true
			change(&inst)
			return b.write(inst)
		}
		return nil
	})
	switch {
	case err != nil:
		return fail(err.Error(), true)
	case !found:
		return fail("instance "+id+" does not exist", false)
	}
	return output{Success: true}
}

func instanceJSON(inst Instance, password string) map[string]any {
	m := map[string]any{
		"external_id": inst.ExternalID, "name": inst.Name, "contract_id": inst.ContractID,
		"ip_address": inst.IPAddress, "ssh_port": inst.SSHPort, "status": map[bool]string{false: "running", true: "stopped"}[inst.Stopped],
		"additional_details": map[string]any{"backend": "demo", "created_at": inst.CreatedAt.UTC().Format(time.RFC3339)},
	}
	if password != "" {
		m["root_password"] = password
	}
	return m
}

// Instances lists the pool (for tests and the demo's display).
func (b *Backend) Instances() []Instance { return b.list() }

// Calls reads calls.log.
func (b *Backend) Calls() ([]Call, error) {
	data, err := os.ReadFile(filepath.Join(b.Dir, "calls.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Call
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		var c Call
		if err := json.Unmarshal([]byte(line), &c); err == nil {
			out = append(out, c)
		}
	}
	return out, nil
}

// Set writes a knob file (delay, fail, kill-parent); "" removes it.
func (b *Backend) Set(knob, value string) error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(b.Dir, knob)
	if value == "" {
		err := os.Remove(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.WriteFile(p, []byte(value), 0o644)
}

func (b *Backend) path(name string) string {
	return filepath.Join(b.Dir, "instances", filepath.Base(name)+".json")
}

func (b *Backend) list() []Instance {
	des, _ := os.ReadDir(filepath.Join(b.Dir, "instances"))
	var out []Instance
	for _, de := range des {
		if !strings.HasSuffix(de.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(b.Dir, "instances", de.Name()))
		if err != nil {
			continue
		}
		var inst Instance
		if json.Unmarshal(data, &inst) == nil {
			out = append(out, inst)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

func (b *Backend) byContract(cid string) *Instance {
	for _, inst := range b.list() {
		if inst.ContractID == cid {
			return &inst
		}
	}
	return nil
}

// locked runs f holding the pool's lock (calls run as separate processes).
func (b *Backend) locked(f func() error) error {
	lf, err := os.OpenFile(filepath.Join(b.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	return f()
}

func (b *Backend) logCall(c Call) {
	data, _ := json.Marshal(c)
	f, err := os.OpenFile(filepath.Join(b.Dir, "calls.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(data, '\n')) // one write: O_APPEND keeps lines whole
}

func fail(msg string, retry bool) output {
	return output{Success: false, Error: msg, RetryPossible: &retry}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func derefInt64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
