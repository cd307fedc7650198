// Package proxmox provisions contracts as Proxmox VE virtual machines
// through go-proxmox and an API token: a clone of a cloud-init template
// named dc-<contract id> (found again by that name after a crash), sized
// to the offering, configured with the requester's SSH key through
// PVE-native cloud-init keys, started, and reported once the guest agent
// knows its addresses. Clones are limited per node and storage because PVE
// locks storage while cloning. The node certificate is pinned by its
// SHA-256 fingerprint.
package proxmox

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Type is the registry name.
const Type = config.TypeProxmox

// Tag marks VMs made by dc-agent (PVE tags are lower case).
const Tag = "dc-agent"

// Options tune timing and retries; zero values are production defaults.
// Tests use milliseconds.
type Options struct {
	// PollInterval between task status polls (default 1s).
	PollInterval time.Duration
	// CloneTimeout bounds a clone task (default 15 min); TaskTimeout every
	// other task (default 3 min).
	CloneTimeout time.Duration
	TaskTimeout  time.Duration
	// IPWaitInterval and IPWaitAttempts bound the wait for the guest
	// agent's addresses (default: ip_wait_interval_secs and
	// ip_wait_attempts of the config).
	IPWaitInterval time.Duration
	IPWaitAttempts int
	// CloneRetries is how often a clone is retried after a PVE lock
	// timeout or a VMID taken by someone else (default 5); RetryBackoff
	// the first wait between lock-timeout retries, doubling (default 2s).
	CloneRetries int
	RetryBackoff time.Duration
	// CleanupTimeout bounds removing a half-made VM, retrying while the
	// node does not answer (default 3 min).
	CleanupTimeout time.Duration
	// SSHPort of guests (default 22); SSHWait bounds waiting for sshd
	// before post_provision_script (default 3 min); ScriptTimeout bounds
	// the script (default 10 min).
	SSHPort       int
	SSHWait       time.Duration
	ScriptTimeout time.Duration
	// HTTPTimeout bounds one API request (default 60s).
	HTTPTimeout time.Duration
	// ProbeTimeout bounds the health check's TCP probe (default 5s).
	ProbeTimeout time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

func (o *Options) defaults(cfg *config.ProxmoxConfig) {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
		if cfg.TaskPollIntervalMs > 0 {
			o.PollInterval = time.Duration(cfg.TaskPollIntervalMs) * time.Millisecond
		}
	}
	if o.CloneTimeout <= 0 {
		o.CloneTimeout = provisioners.DefaultTimeouts.Create
	}
	if o.TaskTimeout <= 0 {
		o.TaskTimeout = provisioners.DefaultTimeouts.Task
	}
	if o.IPWaitInterval <= 0 {
		o.IPWaitInterval = time.Duration(max(cfg.IPWaitIntervalSec, 1)) * time.Second
	}
	if o.IPWaitAttempts <= 0 {
		o.IPWaitAttempts = max(cfg.IPWaitAttempts, 1)
	}
	if o.CloneRetries <= 0 {
		o.CloneRetries = 5
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = provisioners.DefaultTimeouts.RetryWait
	}
	if o.CleanupTimeout <= 0 {
		o.CleanupTimeout = 3 * time.Minute
	}
	if o.SSHPort <= 0 {
		o.SSHPort = 22
	}
	if o.SSHWait <= 0 {
		o.SSHWait = 3 * time.Minute
	}
	if o.ScriptTimeout <= 0 {
		o.ScriptTimeout = 10 * time.Minute
	}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 60 * time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Provisioner is the Proxmox VE backend.
type Provisioner struct {
	cfg  config.ProxmoxConfig
	c    *proxmox.Client
	tr   *http.Transport
	opts Options
	log  *slog.Logger

	calls atomic.Int64

	// postKey runs post_provision_script; its public half goes into sshkeys.
	postKey ssh.Signer

	tplMu     sync.Mutex // serialises template reads
	mu        sync.Mutex
	cloneSem  map[string]chan struct{}
	templates map[int]*templateInfo
	ips       map[string]string // externalID -> IPv4 (health probes)
	placing                     // cluster placement's reservations (under mu)
}

// NewFactory returns a registry factory using opts.
func NewFactory(opts Options) provisioners.Factory {
	return func(pc config.ProvisionerConfig, deps provisioners.Deps) (provisioners.Provisioner, error) {
		if pc.Proxmox == nil {
			return nil, errors.New("[provisioner.proxmox] section is missing")
		}
		px := *pc.Proxmox
		var secret string
		var err error
		if deps.Config != nil {
			secret, err = deps.Config.ReadSecret(px.APITokenSecretFile, px.APITokenSecret, "proxmox api_token_secret_file")
			px.PostProvisionKeyFile = deps.Config.ResolvePath(px.PostProvisionKeyFile)
		} else if px.APITokenSecretFile != "" {
			secret, err = identity.ReadSecretFile(px.APITokenSecretFile)
		} else {
			secret = px.APITokenSecret
		}
		if err != nil {
			return nil, err
		}
		if opts.Logger == nil {
			opts.Logger = deps.Logger
		}
		// The agent's timeouts (Timing.Backend); cleanup keeps its own
		// deadline: it must outlast a node outage.
		opts.CloneTimeout = cmp.Or(opts.CloneTimeout, deps.Timeouts.Create)
		opts.TaskTimeout = cmp.Or(opts.TaskTimeout, deps.Timeouts.Task)
		opts.RetryBackoff = cmp.Or(opts.RetryBackoff, deps.Timeouts.RetryWait)
		return New(px, secret, opts)
	}
}

// Factory is the production factory.
var Factory = NewFactory(Options{})

// Register adds the backend to a registry.
func Register(r *provisioners.Registry) { r.Register(Type, Factory) }

// New builds the backend from its config section and the token secret.
func New(cfg config.ProxmoxConfig, secret string, opts Options) (*Provisioner, error) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return nil, errors.New("the Proxmox API token secret is empty; put the secret `pveum user token add` printed in api_token_secret_file")
	}
	if cfg.APIURL == "" || cfg.APITokenID == "" || (cfg.Node == "" && len(cfg.Nodes) == 0) {
		return nil, errors.New("api_url, api_token_id and node (or nodes) must be set in [provisioner.proxmox]; dc-agent setup proxmox fills them in")
	}
	if err := checkNodes(&cfg); err != nil {
		return nil, err
	}
	if cfg.Storage == "" {
		cfg.Storage = config.DefaultProxmoxStorage
	}
	if cfg.MaxParallelClones <= 0 {
		cfg.MaxParallelClones = config.DefaultMaxParallelClones
	}
	if cfg.CIUser == "" {
		cfg.CIUser = "root"
	}
	if cfg.IPWaitAttempts <= 0 {
		cfg.IPWaitAttempts = 30
	}
	if cfg.IPWaitIntervalSec <= 0 {
		cfg.IPWaitIntervalSec = 5
	}
	opts.defaults(&cfg)
	tlsCfg, err := tlsConfig(cfg, opts.Logger)
	if err != nil {
		return nil, err
	}
	p := &Provisioner{cfg: cfg, opts: opts, log: opts.Logger,
		cloneSem: map[string]chan struct{}{}, templates: map[int]*templateInfo{}, ips: map[string]string{}}
	p.tr = &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsCfg,
		DialContext:         (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 15 * time.Second,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
	hc := &http.Client{Transport: countingTransport{rt: p.tr, n: &p.calls}, Timeout: opts.HTTPTimeout}
	// Our own http.Client carries the pin; go-proxmox's TLS options would
	// rewrite its TLS config, so none are passed (BACKENDS.md §1.1).
	p.c = proxmox.NewClient(apiBase(cfg.APIURL),
		proxmox.WithAPIToken(cfg.APITokenID, secret),
		proxmox.WithHTTPClient(hc),
		proxmox.WithUserAgent("dc-agent/"+buildinfo.Version),
	)
	if cfg.PostProvisionKeyFile != "" {
		pem, err := identity.ReadSecretFile(cfg.PostProvisionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("post_provision_key_file: %w", err)
		}
		signer, err := ssh.ParsePrivateKey([]byte(pem + "\n"))
		if err != nil {
			return nil, fmt.Errorf("post_provision_key_file %s is not an unencrypted OpenSSH private key: %w", cfg.PostProvisionKeyFile, err)
		}
		p.postKey = signer
	}
	return p, nil
}

// apiBase appends /api2/json to the configured URL unless present.
func apiBase(u string) string {
	u = strings.TrimRight(u, "/")
	if strings.HasSuffix(u, "/api2/json") {
		return u
	}
	return u + "/api2/json"
}

// tlsConfig pins the node certificate: Go still calls
// VerifyPeerCertificate when chain verification is skipped, so the pin is
// the only check, and a renewed certificate fails loudly.
func tlsConfig(cfg config.ProxmoxConfig, log *slog.Logger) (*tls.Config, error) {
	if cfg.TLSFingerprint != "" {
		pin, err := config.NormalizeFingerprint(cfg.TLSFingerprint)
		if err != nil {
			return nil, fmt.Errorf("tls_fingerprint: %w", err)
		}
		return &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, //nolint:gosec // replaced by the fingerprint pin below
			VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
				if len(rawCerts) == 0 {
					return errors.New("proxmox node sent no certificate")
				}
				sum := sha256.Sum256(rawCerts[0])
				got := hex.EncodeToString(sum[:])
				if got != pin {
					return fmt.Errorf("proxmox node certificate fingerprint %s does not match tls_fingerprint %s; if the certificate was renewed, update tls_fingerprint (pvesh get /nodes --output-format json shows ssl_fingerprint)",
						colonHex(got), colonHex(pin))
				}
				return nil
			},
		}, nil
	}
	if cfg.InsecureSkipVerify {
		log.Warn("Proxmox TLS certificate verification is DISABLED (insecure_skip_verify = true); set tls_fingerprint to pin the node certificate")
		return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}, nil //nolint:gosec // explicit, logged opt-in
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}, nil
}

func colonHex(h string) string {
	var parts []string
	for i := 0; i+2 <= len(h); i += 2 {
		parts = append(parts, strings.ToUpper(h[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// countingTransport counts API requests (reported by APICalls).
type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	resp, err := c.rt.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	return unanswered(r, resp)
}

// APICalls is the number of Proxmox API requests made so far.
func (p *Provisioner) APICalls() int64 { return p.calls.Load() }

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true, Inventory: true, Pause: true, ResetPassword: true, RotateSSHKey: true}
}

// RequesterKeys implements provisioners.RequesterSettable. A contract may
// pick one of the provider's named templates and its VM's DNS servers;
// everything else (ipconfig0: addresses on the provider's bridge,
// template_vmid or a template by VMID: any VM on the node, ...) is the
// provider's, set in the offering or allowed with instance_config_allow.
func (p *Provisioner) RequesterKeys() []provisioners.RequesterKey {
	return []provisioners.RequesterKey{
		{Name: "template", Check: func(v any) error {
			if s, ok := v.(string); ok {
				if _, ok := p.cfg.Templates[s]; ok {
					return nil
				}
			}
			return fmt.Errorf("%s is not a template name of this provider (%s)", provisioners.ShortValue(v), p.templateNames())
		}},
		{Name: "nameserver", Check: checkNameservers},
	}
}

// checkNameservers accepts 1 to 3 IP addresses separated by spaces, as
// Proxmox's nameserver option takes them.
func checkNameservers(v any) error {
	s, ok := v.(string)
	f := strings.Fields(s)
	if ok && len(f) >= 1 && len(f) <= 3 {
		good := true
		for _, a := range f {
			if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" {
				good = false
			}
		}
		if good {
			return nil
		}
	}
	return fmt.Errorf("%s is not a list of 1 to 3 IP addresses separated by spaces, e.g. \"1.1.1.1 2606:4700:4700::1111\"", provisioners.ShortValue(v))
}

// Close drops idle connections.
func (p *Provisioner) Close() error {
	p.tr.CloseIdleConnections()
	return nil
}

// ExternalID formats a VM's id as "node/vmid".
func ExternalID(node string, vmid int) string { return node + "/" + strconv.Itoa(vmid) }

var nodeNameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// parseExternalID accepts "node/vmid" or a bare VMID (the configured node).
func (p *Provisioner) parseExternalID(id string) (string, int, error) {
	node, vmidText, ok := strings.Cut(id, "/")
	if !ok {
		node, vmidText = p.cfg.Node, id
	}
	vmid, err := strconv.Atoi(vmidText)
	// The node goes into request paths: only a host name is accepted.
	if err != nil || vmid < 100 || vmid > 999999999 || !nodeNameRe.MatchString(node) {
		return "", 0, fmt.Errorf("instance id %q is not a Proxmox VM id (want node/vmid, e.g. %s/101)", id, p.cfg.Node)
	}
	return node, vmid, nil
}

func (p *Provisioner) vm(node string, vmid int) *proxmox.VirtualMachine {
	vm := &proxmox.VirtualMachine{}
	vm.New(p.c, node, vmid)
	return vm
}

func (p *Provisioner) node(name string) *proxmox.Node {
	return (&proxmox.Node{}).New(p.c, name)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apiError makes a go-proxmox error readable: 403s lose PVE's message in
// the library, so say what to do.
func apiError(what string, err error) error {
	if err == nil {
		return nil
	}
	if proxmox.IsNotAuthorized(err) {
		return fmt.Errorf("%s: Proxmox refused the API token (401/403): it lacks a privilege for this or the secret is wrong; re-run `dc-agent setup proxmox` to repair the role and token", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// transient reports whether err is a network failure worth retrying (the
// node did not answer), as opposed to an answer from PVE.
func transient(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"EOF", "connection refused", "connection reset", "broken pipe", "no route to host", "i/o timeout", "TLS handshake", "502 ", "503 ", "504 ", "595 ", "596 "} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}
