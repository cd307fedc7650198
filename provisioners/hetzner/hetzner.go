// Package hetzner provisions contracts as Hetzner Cloud servers through
// hcloud-go: the offering picks a server type, the datacenter city a
// location; the requester's SSH key is uploaded (or reused) as a labelled
// key object; servers carry the contract id in labels (see naming.go) so
// that a restarted agent finds them again.
package hetzner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/exp/actionutil"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Type is the registry name.
const Type = config.TypeHetzner

// maxUserData is Hetzner's limit on user_data.
const maxUserData = 32 * 1024

// Options tune the client; zero values are production defaults. Tests use
// millisecond intervals.
type Options struct {
	// PollInterval is the action polling interval (default 1s).
	PollInterval time.Duration
	// RetryBackoff is the backoff between retries of failed API calls
	// (default: exponential from 1s with jitter, capped at 1 min).
	RetryBackoff hcloud.BackoffFunc
	// MaxRetries of one API call on 429/409 conflict/502/504/timeouts (default 5).
	MaxRetries int
	// MaxRateLimitWait caps how long one request waits for the rate limit
	// to reset (default 1 min).
	MaxRateLimitWait time.Duration
	// HTTPClient is the base client (its Transport is wrapped).
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     *slog.Logger
}

// Provisioner is the Hetzner Cloud backend.
type Provisioner struct {
	cfg  config.HetznerConfig
	c    *hcloud.Client
	gate *cloudkit.Transport
	log  *slog.Logger
	now  func() time.Time
	poll time.Duration

	// keys are the SSH key objects the agent uploads.
	keys *cloudkit.Keys

	// starts records since when servers run (keys: server ids).
	starts cloudkit.Starts
}

// NewFactory returns a registry factory using opts.
func NewFactory(opts Options) provisioners.Factory {
	return cloudkit.Factory(Type, func(pc config.ProvisionerConfig) *config.HetznerConfig { return pc.Hetzner },
		func(c *config.HetznerConfig) (string, string) { return c.APITokenFile, c.APIToken },
		func(cfg config.HetznerConfig, token string, log *slog.Logger) (provisioners.Provisioner, error) {
			opts.Logger = cmp.Or(opts.Logger, log)
			return New(cfg, token, opts)
		})
}

// Factory is the production factory.
var Factory = NewFactory(Options{})

// New builds the backend from its config section and the API token.
func New(cfg config.HetznerConfig, token string, opts Options) (*Provisioner, error) {
	token, err := cloudkit.CheckToken(token, "Hetzner", "put a Read & Write token from the Cloud Console (Security > API tokens) in api_token_file")
	if err != nil {
		return nil, err
	}
	if cfg.DefaultLocation == "" {
		cfg.DefaultLocation = config.DefaultHetznerLocation
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = config.DefaultHetznerImage
	}
	if cfg.ActionTimeoutSecond <= 0 {
		cfg.ActionTimeoutSecond = 300
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 5
	}
	if opts.MaxRateLimitWait <= 0 {
		opts.MaxRateLimitWait = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// hcloud-go retries itself; the transport only waits for resets.
	gate := &cloudkit.Transport{MaxWait: opts.MaxRateLimitWait, Now: opts.Now}
	hc := cloudkit.WithTransport(opts.HTTPClient, gate)

	copts := []hcloud.ClientOption{
		hcloud.WithToken(token),
		hcloud.WithApplication("dc-agent", buildinfo.Version),
		hcloud.WithHTTPClient(hc),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(opts.PollInterval)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: opts.RetryBackoff, MaxRetries: opts.MaxRetries}),
	}
	if cfg.Endpoint != "" {
		copts = append(copts, hcloud.WithEndpoint(cfg.Endpoint))
	}
	p := &Provisioner{
		cfg:  cfg,
		c:    hcloud.NewClient(copts...),
		gate: gate,
		log:  opts.Logger.With("provisioner", Type),
		now:  opts.Now,
		poll: opts.PollInterval,
	}
	p.keys = p.newKeys()
	return p, nil
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true, Pause: true, ResetPassword: true}
}

// RequesterKeys implements provisioners.RequesterSettable: a contract may
// ask for an ARM or x86 machine when the server type is picked by size.
// server_type, cpu_type, location and image decide what the provider pays
// for and where (an image may be one of the project's snapshots), so they
// are the provider's: set in the offering or allowed with
// instance_config_allow.
func (p *Provisioner) RequesterKeys() []provisioners.RequesterKey {
	return []provisioners.RequesterKey{{Name: "architecture", Check: provisioners.OneOf("x86", "arm")}}
}

func (p *Provisioner) actionTimeout() time.Duration {
	return time.Duration(p.cfg.ActionTimeoutSecond) * time.Second
}

// Provision implements provisioners.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	cid, err := cloudkit.ContractID(req.ContractID)
	if err != nil {
		return provisioners.Instance{}, err
	}
	req.ContractID = cid
	access, err := cloudkit.RequestAccess(req)
	if err != nil {
		return provisioners.Instance{}, err
	}

	req.Step("looking for an existing server")
	existing, err := p.findServer(ctx, cid)
	if err != nil {
		return provisioners.Instance{}, p.classify("look up existing server", err)
	}
	if existing != nil {
		p.log.Info("found existing server for contract, resuming it", "contract", cid, "server", existing.ID, "status", existing.Status)
		return p.resume(ctx, req, existing)
	}

	loc, why := chooseLocation(req, p.cfg.Locations, p.cfg.DefaultLocation)
	req.Step("choosing a server type in " + loc)
	types, err := p.c.ServerType.All(ctx)
	if err != nil {
		return provisioners.Instance{}, p.classify("list server types", err)
	}
	var st *hcloud.ServerType
	if name, from := p.explicitType(req); name != "" {
		st, err = checkNamedType(types, name, from, loc)
	} else {
		st, err = pickServerType(types, need{
			cores: max(req.CPUCores, 1), memMB: req.MemoryMB, diskGB: req.StorageGB,
			arch: req.ConfigString("architecture", "x86"), cpuType: req.ConfigString("cpu_type", ""),
		}, loc)
	}
	if err != nil {
		return provisioners.Instance{}, err
	}
	image := req.ConfigString("image", p.cfg.DefaultImage)
	userData, err := cloudkit.UserData{Provider: "Hetzner", MaxBytes: maxUserData, HasKey: access.HasKey()}.CloudConfig(req)
	if err != nil {
		return provisioners.Instance{}, err
	}
	p.log.Info("creating server", "contract", cid, "server_type", st.Name, "location", loc, "location_from", why, "image", image)

	labels := contractLabels(cid)
	opts := hcloud.ServerCreateOpts{
		Name:       ServerName(cid),
		ServerType: &hcloud.ServerType{Name: st.Name},
		Image:      &hcloud.Image{Name: image},
		Location:   &hcloud.Location{Name: loc},
		UserData:   userData,
		Labels:     labels,
		PublicNet:  &hcloud.ServerCreatePublicNet{EnableIPv4: true, EnableIPv6: true},
	}

	var res hcloud.ServerCreateResult
	err = p.keys.Create(ctx, req, access, "server "+opts.Name, func(ctx context.Context, keyID string) (err error) {
		if keyID != "" {
			id, _ := strconv.ParseInt(keyID, 10, 64)
			opts.SSHKeys = []*hcloud.SSHKey{{ID: id}}
			labels[LabelSSHKey] = keyID
		}
		res, _, err = p.c.Server.Create(ctx, opts)
		return err
	})
	if err != nil {
		if hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
			// A server with this name appeared since the lookup: an
			// earlier attempt of ours whose response was lost, or a
			// server someone else named like ours.
			if sv, ferr := p.findServer(ctx, cid); ferr == nil && sv != nil {
				return p.resume(ctx, req, sv)
			}
			return provisioners.Instance{}, provisioners.Permanent(fmt.Errorf("a server named %s exists in the Hetzner project but is not labelled as this contract's; rename or delete it", opts.Name))
		}
		return provisioners.Instance{}, p.classify(fmt.Sprintf("create server (type %s, location %s, image %s)", st.Name, loc, image), err)
	}

	req.Step("waiting for the server to start")
	if err := p.wait(ctx, actionutil.AppendNext(res.Action, res.NextActions)...); err != nil {
		p.cleanup(ctx, res.Server)
		return provisioners.Instance{}, p.classify("create and start server "+res.Server.Name, err)
	}
	sv, _, err := p.c.Server.GetByID(ctx, res.Server.ID)
	if err == nil && sv == nil {
		err = fmt.Errorf("server %d disappeared right after creation", res.Server.ID)
	}
	if err != nil {
		p.cleanup(ctx, res.Server)
		return provisioners.Instance{}, p.classify("read server "+res.Server.Name, err)
	}
	inst := instanceFromServer(sv)
	if !access.HasKey() {
		inst.RootPassword = res.RootPassword
	}
	if inst.IPAddress == "" && inst.IPv6Address == "" {
		p.cleanup(ctx, sv)
		return provisioners.Instance{}, provisioners.Retryable(fmt.Errorf("server %s has no public IP address", sv.Name))
	}
	p.markRunning(sv.ID, p.now())
	return inst, nil
}

// explicitType is the server type chosen by the offering's config or the
// [provisioner.hetzner.server_types] table ("" to pick automatically).
func (p *Provisioner) explicitType(req provisioners.Request) (name, from string) {
	if t := req.ConfigString("server_type", ""); t != "" {
		return t, "the offering's server_type setting"
	}
	if t := p.cfg.ServerTypes[req.OfferingID]; t != "" {
		return t, "server_types table entry for offering " + strconv.Quote(req.OfferingID)
	}
	return "", ""
}

// resume brings a server found for the contract (left by a crashed or
// timed-out attempt) to running. If that fails the server is removed, so
// the next attempt starts clean.
func (p *Provisioner) resume(ctx context.Context, req provisioners.Request, sv *hcloud.Server) (provisioners.Instance, error) {
	inst, err := p.resumeServer(ctx, req, sv)
	if err != nil {
		p.cleanup(ctx, sv)
		return provisioners.Instance{}, err
	}
	return inst, nil
}

func (p *Provisioner) resumeServer(ctx context.Context, req provisioners.Request, sv *hcloud.Server) (provisioners.Instance, error) {
	if sv.Status == hcloud.ServerStatusDeleting {
		return provisioners.Instance{}, provisioners.Retryable(fmt.Errorf("server %s of this contract is still being deleted; will retry", sv.Name))
	}
	if sv.Status == hcloud.ServerStatusOff {
		req.Step("powering on existing server")
		a, _, err := p.c.Server.Poweron(ctx, sv)
		if err != nil {
			return provisioners.Instance{}, p.classify("power on server "+sv.Name, err)
		}
		if err := p.wait(ctx, a); err != nil {
			return provisioners.Instance{}, p.classify("power on server "+sv.Name, err)
		}
	}
	req.Step("waiting for the existing server to run")
	sv, err := p.waitRunning(ctx, sv.ID)
	if err != nil {
		return provisioners.Instance{}, err
	}
	inst := instanceFromServer(sv)
	if sv.Labels[LabelSSHKey] == "" && req.WantPassword {
		// The password of the first attempt was lost with it.
		req.Step("resetting the root password")
		res, _, err := p.c.Server.ResetPassword(ctx, sv)
		if err != nil {
			return provisioners.Instance{}, p.classify("reset root password of "+sv.Name, err)
		}
		if err := p.wait(ctx, res.Action); err != nil {
			return provisioners.Instance{}, p.classify("reset root password of "+sv.Name, err)
		}
		inst.RootPassword = res.RootPassword
	}
	return inst, nil
}

// waitRunning polls a server until it runs, within the action timeout.
func (p *Provisioner) waitRunning(ctx context.Context, id int64) (*hcloud.Server, error) {
	ctx, cancel := context.WithTimeout(ctx, p.actionTimeout())
	defer cancel()
	for {
		sv, _, err := p.c.Server.GetByID(ctx, id)
		if err != nil {
			return nil, p.classify(fmt.Sprintf("wait for server %d", id), err)
		}
		if sv == nil {
			return nil, provisioners.Retryable(fmt.Errorf("server %d disappeared while waiting for it to run", id))
		}
		switch sv.Status {
		case hcloud.ServerStatusRunning:
			return sv, nil
		case hcloud.ServerStatusOff, hcloud.ServerStatusDeleting:
			return nil, provisioners.Retryable(fmt.Errorf("server %s is %s instead of starting", sv.Name, sv.Status))
		}
		if err := cloudkit.Sleep(ctx, p.poll); err != nil {
			return nil, p.classify(fmt.Sprintf("wait for server %s (status %s)", sv.Name, sv.Status), err)
		}
	}
}

// wait waits for actions within the action timeout.
func (p *Provisioner) wait(ctx context.Context, actions ...*hcloud.Action) error {
	ctx, cancel := context.WithTimeout(ctx, p.actionTimeout())
	defer cancel()
	return p.c.Action.WaitFor(ctx, actions...)
}

// ensureSSHKey returns the key object for pub: an existing one with the
// same fingerprint (ours or the provider's), else a new labelled one.
// Called with the key lock of Keys.Create held.
func (p *Provisioner) ensureSSHKey(ctx context.Context, pub ssh.PublicKey, line string) (*hcloud.SSHKey, error) {
	fp := ssh.FingerprintLegacyMD5(pub)
	k, _, err := p.c.SSHKey.GetByFingerprint(ctx, fp)
	if err != nil {
		return nil, p.classify("look up SSH key "+fp, err)
	}
	if k != nil {
		return k, nil
	}
	name := cloudkit.KeyName(pub)
	k, _, err = p.c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{
		Name: name, PublicKey: line, Labels: map[string]string{LabelManaged: "true"},
	})
	if hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		// Uploaded concurrently (another agent on the same project).
		if k2, _, err2 := p.c.SSHKey.GetByFingerprint(ctx, fp); err2 == nil && k2 != nil {
			return k2, nil
		}
	}
	if err != nil {
		return nil, p.classify("upload SSH key", err)
	}
	return k, nil
}

// newKeys is how SSH key objects are kept on Hetzner: key ids are numbers,
// the agent's own key objects carry the managed label, a server names its
// key object in a label.
func (p *Provisioner) newKeys() *cloudkit.Keys {
	return &cloudkit.Keys{
		Log: p.log,
		Ensure: func(ctx context.Context, a cloudkit.Access) (string, error) {
			k, err := p.ensureSSHKey(ctx, a.Key, a.Line)
			if err != nil {
				return "", err
			}
			return strconv.FormatInt(k.ID, 10), nil
		},
		InUse: func(ctx context.Context, keyID string) (bool, error) {
			users, err := p.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: LabelSSHKey + "=" + keyID}})
			return len(users) > 0, err
		},
		Own: func(ctx context.Context, keyID string) (bool, error) {
			id, err := strconv.ParseInt(keyID, 10, 64)
			if err != nil {
				return false, err
			}
			k, _, err := p.c.SSHKey.GetByID(ctx, id)
			return err == nil && k != nil && k.Labels[LabelManaged] == "true", err
		},
		Delete: func(ctx context.Context, keyID string) error {
			id, err := strconv.ParseInt(keyID, 10, 64)
			if err != nil {
				return err
			}
			if _, err := p.c.SSHKey.Delete(ctx, &hcloud.SSHKey{ID: id}); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
				return err
			}
			return nil
		},
	}
}

// cleanup removes a server of a failed provision, even if ctx is done.
func (p *Provisioner) cleanup(ctx context.Context, sv *hcloud.Server) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.actionTimeout())
	defer cancel()
	if err := p.destroy(ctx, sv); err != nil {
		p.log.Error("could not remove the server of a failed provision; reconcile will report it", "server", sv.ID, "name", sv.Name, "err", err)
	}
}

// destroy deletes a server, waits for it to be gone and releases its key.
func (p *Provisioner) destroy(ctx context.Context, sv *hcloud.Server) error {
	res, _, err := p.c.Server.DeleteWithResult(ctx, sv)
	switch {
	case hcloud.IsError(err, hcloud.ErrorCodeNotFound):
	case err != nil:
		return p.classify(fmt.Sprintf("delete server %d", sv.ID), err)
	default:
		if err := p.wait(ctx, res.Action); err != nil {
			return p.classify(fmt.Sprintf("delete server %d", sv.ID), err)
		}
	}
	p.forget(sv.ID)
	if id, err := strconv.ParseInt(sv.Labels[LabelSSHKey], 10, 64); err == nil && id > 0 {
		p.keys.Release(ctx, strconv.FormatInt(id, 10))
	}
	return nil
}

// Terminate implements provisioners.Provisioner.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	id, err := parseServerID(externalID)
	if err != nil {
		return provisioners.Permanent(err)
	}
	sv, _, err := p.c.Server.GetByID(ctx, id)
	if err != nil {
		return p.classify(fmt.Sprintf("look up server %d", id), err)
	}
	if sv == nil {
		p.forget(id)
		return nil
	}
	if sv.Labels[LabelManaged] != "true" {
		return provisioners.Permanent(fmt.Errorf("server %d (%s) has no %s=true label, so dc-agent did not create it; refusing to delete it", id, sv.Name, LabelManaged))
	}
	return p.destroy(ctx, sv)
}

func parseServerID(externalID string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(externalID), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a Hetzner server id (a positive number)", externalID)
	}
	return id, nil
}

// HealthCheck implements provisioners.Provisioner: the server status, and
// uptime since its last start.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	id, err := parseServerID(externalID)
	if err != nil {
		return provisioners.Health{}, err
	}
	sv, _, err := p.c.Server.GetByID(ctx, id)
	if err != nil {
		return provisioners.Health{Status: provisioners.Unknown, Reason: err.Error()}, p.classify(fmt.Sprintf("read server %d", id), err)
	}
	if sv == nil {
		p.forget(id)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: fmt.Sprintf("server %d no longer exists", id)}, nil
	}
	switch sv.Status {
	case hcloud.ServerStatusRunning:
		since := p.startedAt(ctx, sv)
		return provisioners.Health{Status: provisioners.Healthy, UptimeSeconds: int64(max(0, p.now().Sub(since).Seconds()))}, nil
	case hcloud.ServerStatusOff, hcloud.ServerStatusStopping, hcloud.ServerStatusDeleting:
		p.forget(id)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "server is " + string(sv.Status)}, nil
	default:
		p.forget(id)
		return provisioners.Health{Status: provisioners.Unknown, Reason: "server is " + string(sv.Status)}, nil
	}
}

// startCommands are the actions after which a server runs afresh.
var startCommands = map[string]bool{"start_server": true, "reboot_server": true, "reset_server": true}

// startedAt is when a running server last started: remembered once seen,
// else the last successful start action (one extra call), else creation.
// Hetzner reports no uptime itself.
func (p *Provisioner) startedAt(ctx context.Context, sv *hcloud.Server) time.Time {
	if t, ok := p.starts.Get(serverKey(sv.ID)); ok {
		return t
	}
	t := sv.Created
	actions, _, err := p.c.Server.Action.ListFor(ctx, sv, hcloud.ActionListOpts{Sort: []string{"id:desc"}, Status: []hcloud.ActionStatus{hcloud.ActionStatusSuccess}})
	if err == nil {
		for _, a := range actions {
			if startCommands[a.Command] && !a.Finished.IsZero() {
				t = a.Finished
				break
			}
		}
	}
	p.markRunning(sv.ID, t)
	return t
}

func (p *Provisioner) markRunning(id int64, t time.Time) { p.starts.Mark(serverKey(id), t) }

func (p *Provisioner) forget(id int64) { p.starts.Forget(serverKey(id)) }

func serverKey(id int64) string { return strconv.FormatInt(id, 10) }

// GetInstance implements provisioners.Provisioner.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	cid, err := cloudkit.ContractID(contractID)
	if err != nil {
		return nil, err
	}
	sv, err := p.findServer(ctx, cid)
	if err != nil {
		return nil, p.classify("look up server of contract", err)
	}
	if sv == nil {
		return nil, nil
	}
	inst := instanceFromServer(sv)
	return &inst, nil
}

// findServer returns the contract's server (nil if none). Should there be
// several (never made by the agent), the oldest one wins.
func (p *Provisioner) findServer(ctx context.Context, cid string) (*hcloud.Server, error) {
	list, err := p.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: contractSelector(cid)}})
	if err != nil {
		return nil, err
	}
	var best *hcloud.Server
	for _, sv := range list {
		if ContractIDFromLabels(sv.Labels) != cid {
			continue
		}
		if best == nil || sv.ID < best.ID {
			best = sv
		}
	}
	return best, nil
}

// List implements provisioners.Provisioner: every managed server.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	list, err := p.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: managedSelector}})
	if err != nil {
		return nil, p.classify("list servers", err)
	}
	out := make([]provisioners.Instance, 0, len(list))
	for _, sv := range list {
		inst := instanceFromServer(sv)
		if inst.ContractID == "" {
			p.log.Warn("managed server has no valid contract labels; skipping it", "server", sv.ID, "name", sv.Name)
			continue
		}
		out = append(out, inst)
	}
	return out, nil
}

// instanceFromServer converts an API server.
func instanceFromServer(sv *hcloud.Server) provisioners.Instance {
	inst := provisioners.Instance{
		ExternalID: strconv.FormatInt(sv.ID, 10),
		ContractID: ContractIDFromLabels(sv.Labels),
		Name:       sv.Name,
		SSHPort:    22,
		Status:     string(sv.Status),
		CreatedAt:  sv.Created,
		AdditionalDetails: map[string]any{
			"provider":          "hetzner",
			"hetzner_server_id": sv.ID,
		},
	}
	if !sv.PublicNet.IPv4.IsUnspecified() {
		inst.IPAddress = sv.PublicNet.IPv4.IP.String()
	}
	if h := ipv6Host(sv.PublicNet.IPv6.Network); h != "" {
		inst.IPv6Address = h
	}
	if sv.ServerType != nil {
		inst.AdditionalDetails["server_type"] = sv.ServerType.Name
	}
	if sv.Location != nil {
		inst.AdditionalDetails["location"] = sv.Location.Name
	}
	if sv.Image != nil && sv.Image.Name != "" {
		inst.AdditionalDetails["image"] = sv.Image.Name
	}
	return inst
}

// ipv6Host is the address Hetzner configures on a server: <net>::1 of its
// /64 ("" if there is no IPv6 network).
func ipv6Host(n *net.IPNet) string {
	if n == nil {
		return ""
	}
	ip := n.IP.To16()
	if ip == nil || ip.To4() != nil {
		return ""
	}
	host := make(net.IP, net.IPv6len)
	copy(host, ip.Mask(n.Mask))
	host[15] |= 1
	if !n.Contains(host) {
		// A single address (/128), never what Hetzner assigns.
		return ip.String()
	}
	return host.String()
}

// classify wraps an API error with what was being done, a hint, and
// whether a retry can help.
func (p *Provisioner) classify(op string, err error) error {
	if e := cloudkit.Classified(op, err, p.cfg.ActionTimeoutSecond); e != nil {
		return e
	}
	var ae hcloud.ActionError
	if errors.As(err, &ae) {
		cmd := "action"
		if a := ae.Action(); a != nil {
			cmd = a.Command
		}
		return provisioners.Retryable(fmt.Errorf("%s: Hetzner %s failed: %s (%s)", op, cmd, ae.Message, ae.Code))
	}
	var he hcloud.Error
	if !errors.As(err, &he) {
		return provisioners.Retryable(fmt.Errorf("%s: %w", op, err))
	}
	switch he.Code {
	case hcloud.ErrorCodeRateLimitExceeded:
		msg := "Hetzner API rate limit exceeded"
		if d := p.gate.ResetIn(); d > 0 {
			msg += fmt.Sprintf("; the limit resets in %s", d.Round(time.Second))
		}
		return provisioners.Retryable(fmt.Errorf("%s: %s (%s); will retry", op, msg, he.Message))
	case hcloud.ErrorCodeUnauthorized:
		return provisioners.Retryable(fmt.Errorf("%s: Hetzner rejected the API token (%s); put a valid Read & Write token in api_token_file", op, he.Message))
	case hcloud.ErrorCodeForbidden:
		return provisioners.Retryable(fmt.Errorf("%s: the Hetzner API token may not do this (%s); use a Read & Write token", op, he.Message))
	case hcloud.ErrorCodeResourceUnavailable:
		return provisioners.Retryable(fmt.Errorf("%s: Hetzner cannot place the server now (%s: %s); capacity in that location is exhausted, will retry", op, he.Code, he.Message))
	case hcloud.ErrorCodeResourceLimitExceeded:
		return provisioners.Retryable(fmt.Errorf("%s: the Hetzner project's limit is reached (%s); ask Hetzner to raise it", op, he.Message))
	case hcloud.ErrorCodeInvalidInput:
		return provisioners.Permanent(fmt.Errorf("%s: Hetzner rejected the request: %s", op, describeInvalid(he)))
	}
	return provisioners.Retryable(fmt.Errorf("%s: %w", op, err))
}

// describeInvalid renders an invalid_input error with its field messages.
func describeInvalid(he hcloud.Error) string {
	msg := he.Message
	if d, ok := he.Details.(hcloud.ErrorDetailsInvalidInput); ok {
		for _, f := range d.Fields {
			msg += fmt.Sprintf("; %s: %s", f.Name, strings.Join(f.Messages, ", "))
		}
	}
	return msg
}

// TestOptions are Options for tests, benchmarks and demos against the
// simulator: millisecond polling and retries.
func TestOptions() Options {
	return Options{
		PollInterval:     2 * time.Millisecond,
		RetryBackoff:     hcloud.ConstantBackoff(time.Millisecond),
		MaxRetries:       3,
		MaxRateLimitWait: 50 * time.Millisecond,
	}
}

// Register adds the production factory to r.
func Register(r *provisioners.Registry) { r.Register(Type, Factory) }
