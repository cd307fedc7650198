package setup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
)

// ProxmoxAnswers are every answer of a Proxmox setup, whether they come
// from flags and DC_AGENT_* variables (--no-tui) or from the wizard's
// screens. Both build the plan with NewProxmoxPlan, so the same answers
// give the same node and the same config.
type ProxmoxAnswers struct {
	ConfigPath string
	StateDir   string
	KeyPath    string
	TokenFile  string

	APIEndpoint    string
	ProviderPubkey string
	// Pool is the agent pool a setup token registered the agent into
	// (from the registration, or the config for the same provider).
	Pool Pool

	// ProxmoxAPIURL is the node's API as the agent reaches it.
	ProxmoxAPIURL string
	Storage       string
	Bridge        string
	Templates     []string
	ImageMirror   string
	ImageDir      string
	VMIDBase      int
	RotateToken   bool
	// TokenID is the Proxmox API token the config names (FillDefaults):
	// the agent keeps it; a new agent gets a token of its own.
	TokenID string

	// GatewaySysctlFile keeps IPv4 forwarding on at the node's boot when
	// the gateway is set up ("": DefaultGatewaySysctlFile).
	GatewaySysctlFile string
	// Gateway is the gateway chosen (the flow fills it in; nil: none).
	Gateway *GatewayAnswer

	// Delegation is the signed delegation (dcds1:...) to register without
	// asking (the flow's registration step).
	Delegation string
	// UserAgent for the Decent Cloud API.
	UserAgent string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// FillDefaults completes the answers from the existing config and the
// built-in defaults; host is the node's SSH host (for the API URL).
func (a *ProxmoxAnswers) FillDefaults(existing *config.Config, host string) {
	if existing == nil {
		existing = &config.Config{}
	}
	if a.APIEndpoint == "" {
		a.APIEndpoint = existing.API.Endpoint
	}
	if a.APIEndpoint == "" {
		a.APIEndpoint = config.DefaultEndpoint
	}
	if a.ProviderPubkey == "" {
		a.ProviderPubkey = existing.API.ProviderPubkey
	}
	if a.Pool == (Pool{}) && a.ProviderPubkey == existing.API.ProviderPubkey {
		a.Pool = Pool{ID: existing.API.PoolID, Name: existing.API.PoolName, Location: existing.API.PoolLocation}
	}
	if a.StateDir == "" {
		a.StateDir = existing.Agent.StateDir
	}
	if a.StateDir == "" {
		a.StateDir = config.DefaultStateDir
	}
	if a.KeyPath == "" && existing.API.AgentSecretKey != "" && existing.AgentKeyPath() != "" {
		a.KeyPath = existing.AgentKeyPath()
	}
	if a.KeyPath == "" {
		a.KeyPath = filepath.Join(filepath.Dir(a.ConfigPath), "agent.key")
	}
	if a.TokenFile == "" {
		a.TokenFile = filepath.Join(filepath.Dir(a.ConfigPath), "proxmox-token")
	}
	if a.ProxmoxAPIURL == "" && host != "" {
		a.ProxmoxAPIURL = "https://" + net.JoinHostPort(host, "8006")
	}
	if len(a.Templates) == 0 {
		a.Templates = append([]string(nil), DefaultTemplates...)
	}
	if old := oldProxmox(existing); a.TokenID == "" && old != nil {
		a.TokenID = old.APITokenID
	}
	if a.ImageDir == "" {
		a.ImageDir = DefaultImageDir
	}
	if a.VMIDBase == 0 {
		a.VMIDBase = DefaultVMIDBase
	}
	for _, p := range []*string{&a.KeyPath, &a.TokenFile, &a.StateDir} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
}

// PinsPath is where SSH host keys are pinned for these answers.
func (a *ProxmoxAnswers) PinsPath() string { return filepath.Join(a.StateDir, KnownHostsFile) }

// PreferredStorage picks the storage to offer first: the configured one,
// then local-lvm, then the only one. ok is false when the node has several
// and none of those: someone has to choose.
func (d *Discovery) PreferredStorage(existing *config.ProxmoxConfig) (string, bool) {
	var cands []string
	if existing != nil {
		cands = append(cands, existing.Storage)
	}
	for _, c := range append(cands, config.DefaultProxmoxStorage) {
		if _, ok := d.Storage(c); ok && c != "" {
			return c, true
		}
	}
	if len(d.Storages) == 1 {
		return d.Storages[0].ID, true
	}
	return "", false
}

// PreferredBridge is PreferredStorage for bridges (vmbr0 by default).
func (d *Discovery) PreferredBridge(existing *config.ProxmoxConfig) (string, bool) {
	var cands []string
	if existing != nil {
		cands = append(cands, existing.Bridge)
	}
	for _, c := range append(cands, config.DefaultProxmoxBridge) {
		if _, ok := d.Bridge(c); ok && c != "" {
			return c, true
		}
	}
	if len(d.Bridges) == 1 {
		return d.Bridges[0].Name, true
	}
	return "", false
}

// ProxmoxRun is a ready plan and what its steps fill in as they run.
type ProxmoxRun struct {
	Plan   Plan
	Result *ProxmoxResult
	Key    *KeyStatus
	// Answers are what the config step writes, read when it runs: a step
	// before it may complete them (a registration that learns the
	// provider from the API).
	Answers *ProxmoxAnswers
}

// NewProxmoxPlan builds the node plan for a connected, discovered node:
// the agent key, the templates, the pool, user, role, token, ACLs and
// their check, and the config.
func NewProxmoxPlan(a ProxmoxAnswers, h *Host, d *Discovery) (*ProxmoxRun, error) {
	if a.ConfigPath == "" || a.APIEndpoint == "" || a.KeyPath == "" || a.TokenFile == "" {
		return nil, errors.New("incomplete answers: call FillDefaults and set the config path")
	}
	if len(a.Templates) == 0 {
		return nil, Fixf("choose at least one of "+fmt.Sprint(ImageNames()), "no templates chosen")
	}
	res := &ProxmoxResult{}
	key := &KeyStatus{}
	po := &ProxmoxOptions{Host: h, Discovery: d, Storage: a.Storage, Bridge: a.Bridge, Templates: a.Templates,
		ImageMirror: a.ImageMirror, ImageDir: a.ImageDir, VMIDBase: a.VMIDBase, TokenFile: a.TokenFile, RotateToken: a.RotateToken, OwnerRef: a.KeyPath,
		Key: key, TokenID: a.TokenID}
	pxSteps, err := ProxmoxSteps(po, res)
	if err != nil {
		return nil, err
	}
	run := &ProxmoxRun{Result: res, Key: key, Answers: &a}
	cfg := ConfigStep(ConfigAnswers{Path: a.ConfigPath}, nil)
	cfg.Run = func(ctx context.Context, r *Reporter) error {
		a := *run.Answers
		if a.ProviderPubkey == "" {
			return errors.New("incomplete answers: no provider public key")
		}
		return ConfigStep(ConfigAnswers{Path: a.ConfigPath, APIEndpoint: a.APIEndpoint, ProviderPubkey: a.ProviderPubkey,
			AgentKeyPath: a.KeyPath, StateDir: a.StateDir, Pool: &a.Pool}, func() ProxmoxSettings {
			return ProxmoxSettings{APIURL: a.ProxmoxAPIURL, TokenID: res.TokenID, TokenFile: a.TokenFile, Node: d.Node,
				Storage: a.Storage, Bridge: a.Bridge, Pool: PVEPool, TLSFingerprint: d.TLSFingerprint, Templates: res.Templates, Default: a.Templates[0],
				Cluster: res.Cluster, NodeTemplates: res.NodeTemplates, Gateway: a.Gateway}
		}).Run(ctx, r)
	}
	steps := append([]Step{KeyStep(a.KeyPath, run.Key)}, pxSteps...)
	run.Plan = Plan{Steps: append(steps, cfg), Now: a.Now}
	return run, nil
}

// HostKeyInfo is what a host presents before anything is trusted.
type HostKeyInfo struct {
	Addr        string
	Fingerprint string // SHA256:...
	Type        string // ssh-ed25519, ...
	// Pinned: the key is the pinned one. Changed: a different key is
	// pinned (the flow stops, as Connect would); PinnedFingerprints are
	// the pinned ones.
	Pinned             bool
	Changed            bool
	PinnedFingerprints []string
}

var errScanned = errors.New("host key scanned")

// ScanHostKey reads a host's SSH key without logging in, for the wizard's
// confirmation screen (show it, then Connect with HostKeyFingerprint set
// to what the provider confirmed).
func ScanHostKey(ctx context.Context, host string, port int, pins HostKeyStore) (HostKeyInfo, error) {
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	pinned, err := pins.Lookup(addr)
	if err != nil {
		return HostKeyInfo{}, err
	}
	pol := &hostKeyPolicy{pinned: pinned}
	info := HostKeyInfo{Addr: addr}
	cfg := &ssh.ClientConfig{User: "dc-agent-scan", HostKeyAlgorithms: pol.algorithms(), Timeout: 20 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			info.Fingerprint, info.Type = ssh.FingerprintSHA256(key), key.Type()
			if len(pinned) > 0 {
				info.Changed = pol.check(addr, nil, key) != nil
				info.Pinned = !info.Changed
			}
			for _, k := range pinned {
				info.PinnedFingerprints = append(info.PinnedFingerprints, ssh.FingerprintSHA256(k))
			}
			return errScanned
		}}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return info, Fixf("check the host name and port, and that sshd runs there", "connect to %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(cfg.Timeout))
	if _, _, _, err := ssh.NewClientConn(conn, addr, cfg); err != nil && !errors.Is(err, errScanned) && info.Fingerprint == "" {
		return info, fmt.Errorf("SSH handshake with %s: %w", addr, err)
	}
	return info, nil
}
