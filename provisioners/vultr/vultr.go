// Package vultr provisions contracts as Vultr cloud compute instances
// through govultr: the offering picks a plan (or the cheapest in stock that
// fits), the datacenter city a region; the requester's SSH key is uploaded
// (or reused) as a key object; instances carry the contract id in tags (see
// naming.go) so that a restarted agent finds them again.
package vultr

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vultr/govultr/v3"
	"golang.org/x/time/rate"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Type is the registry name.
const Type = config.TypeVultr

// maxUserData is the limit on (decoded) user_data.
const maxUserData = 64 * 1024

// DefaultEndpoint is the Vultr API.
const DefaultEndpoint = "https://api.vultr.com"

// Options tune the HTTP client; zero values are production defaults. The
// request pace comes from the config section.
type Options = cloudkit.Options

// TestOptions are Options for tests and benchmarks against the simulator.
func TestOptions() Options { return cloudkit.TestOptions() }

// Provisioner is the Vultr backend.
type Provisioner struct {
	cfg     config.VultrConfig
	c       *govultr.Client
	log     *slog.Logger
	poll    time.Duration
	timeout time.Duration

	// instances is the lifecycle shared with DigitalOcean, on instances.
	instances *cloudkit.Machines[govultr.Instance]
}

// NewFactory returns a registry factory using opts.
func NewFactory(opts Options) provisioners.Factory {
	return cloudkit.Factory(Type, func(pc config.ProvisionerConfig) *config.VultrConfig { return pc.Vultr },
		func(c *config.VultrConfig) (string, string) { return c.APITokenFile, "" },
		func(cfg config.VultrConfig, token string, log *slog.Logger) (provisioners.Provisioner, error) {
			opts.Logger = cmp.Or(opts.Logger, log)
			return New(cfg, token, opts)
		})
}

// Factory is the production factory.
var Factory = NewFactory(Options{})

// Register adds the production factory to r.
func Register(r *provisioners.Registry) { r.Register(Type, Factory) }

// New builds the backend from its config section and the API key.
func New(cfg config.VultrConfig, token string, opts Options) (*Provisioner, error) {
	token, err := cloudkit.CheckToken(token, "Vultr", "put the API key (Account > API, with access from this host's address allowed) in api_token_file")
	if err != nil {
		return nil, err
	}
	if cfg.DefaultRegion == "" {
		cfg.DefaultRegion = config.DefaultVultrRegion
	}
	if cfg.DefaultOSID == 0 {
		cfg.DefaultOSID = config.DefaultVultrOSID
	}
	if cfg.PlanType == "" {
		cfg.PlanType = config.DefaultVultrPlanType
	}
	timeout, poll := cloudkit.Waits(&cfg.ActionTimeoutSeconds, &cfg.PollIntervalMs)
	if cfg.RequestsPerSecond <= 0 {
		cfg.RequestsPerSecond = config.DefaultVultrRequestsPerSecond
	}
	hc, _ := opts.Client(token, rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), cfg.RequestsPerSecond))
	c := govultr.NewClient(hc)
	// Retries are the transport's: govultr's own would repeat a POST that
	// failed with a 5xx, and a create may have happened.
	c.SetRetryLimit(0)
	c.SetUserAgent("dc-agent/" + buildinfo.Version)
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if err := c.SetBaseURL(endpoint); err != nil {
		return nil, fmt.Errorf("vultr endpoint %q: %w", endpoint, err)
	}
	p := &Provisioner{
		cfg: cfg, c: c, log: opts.Logger.With("provisioner", Type), poll: poll, timeout: timeout,
	}
	p.instances = &cloudkit.Machines[govultr.Instance]{API: p.api(), Keys: p.keys(), Noun: "instance", NameKey: "label",
		Log: p.log, Now: opts.Now, Poll: p.poll, Timeout: p.timeout}
	return p, nil
}

// api is what the shared lifecycle does on Vultr: instances are found by
// tag, ids are UUIDs, every call goes through call (for the HTTP status).
func (p *Provisioner) api() cloudkit.MachineAPI[govultr.Instance] {
	return cloudkit.MachineAPI[govultr.Instance]{
		ID:       func(in *govultr.Instance) string { return in.ID },
		Name:     func(in *govultr.Instance) string { return in.Label },
		Status:   func(in *govultr.Instance) string { return in.Status },
		Tags:     func(in *govultr.Instance) []string { return in.Tags },
		Instance: instanceFromVultr,
		Older:    func(a, b *govultr.Instance) bool { return a.DateCreated < b.DateCreated },
		ParseID: func(externalID string) error {
			if id := strings.TrimSpace(externalID); id == "" || strings.ContainsAny(id, "/?#% ") {
				return fmt.Errorf("%q is not a Vultr instance id", externalID)
			}
			return nil
		},
		Get: func(ctx context.Context, id string) (*govultr.Instance, error) {
			var in *govultr.Instance
			err := call(ctx, func(ctx context.Context) (err error) {
				in, _, err = p.c.Instance.Get(ctx, id)
				return err
			})
			if isNotFound(err) {
				return nil, nil
			}
			return in, err
		},
		ListTagged: func(ctx context.Context, tag string) ([]govultr.Instance, error) {
			return p.allInstances(ctx, &govultr.ListOptions{Tag: tag})
		},
		Delete: func(ctx context.Context, in *govultr.Instance) error {
			if err := call(ctx, func(ctx context.Context) error { return p.c.Instance.Delete(ctx, in.ID) }); err != nil && !isNotFound(err) {
				return err
			}
			return nil
		},
		RefuseForeign: p.refuseForeign,
		Resume:        p.resume,
		Classify:      p.classify,
	}
}

// keys is how SSH key objects are kept on Vultr: key ids are UUIDs, an
// instance is tagged with its key's id.
func (p *Provisioner) keys() *cloudkit.Keys {
	return &cloudkit.Keys{
		Log: p.log,
		Ensure: func(ctx context.Context, a cloudkit.Access) (string, error) {
			k, err := p.ensureKey(ctx, a)
			if err != nil {
				return "", err
			}
			return k.ID, nil
		},
		InUse: func(ctx context.Context, keyID string) (bool, error) {
			var users []govultr.Instance
			err := call(ctx, func(ctx context.Context) (err error) {
				users, _, _, err = p.c.Instance.List(ctx, &govultr.ListOptions{Tag: cloudkit.KeyTag(keyID), PerPage: 1})
				return err
			})
			return len(users) > 0, err
		},
		Own: func(ctx context.Context, keyID string) (bool, error) {
			var k *govultr.SSHKey
			err := call(ctx, func(ctx context.Context) (err error) {
				k, _, err = p.c.SSHKey.Get(ctx, keyID)
				return err
			})
			if err != nil {
				return false, err
			}
			return strings.HasPrefix(k.Name, cloudkit.KeyNamePrefix), nil
		},
		Delete: func(ctx context.Context, keyID string) error {
			if err := call(ctx, func(ctx context.Context) error { return p.c.SSHKey.Delete(ctx, keyID) }); err != nil && !isNotFound(err) {
				return err
			}
			return nil
		},
	}
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true, Pause: true}
}

// apiError is an API error with its HTTP status (govultr's errors are
// plain strings; the transport records the status).
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("Vultr API error %d: %s", e.status, e.msg) }

// call runs one API call and gives its error the HTTP status.
func call(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, st := cloudkit.WithStatus(ctx)
	err := f(ctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		// govultr turns errors into strings: keep the deadline findable.
		return fmt.Errorf("%w (%s)", ctx.Err(), err)
	case st.Code() < 400:
		return err
	}
	return &apiError{status: st.Code(), msg: apiMessage(err.Error())}
}

// apiMessage extracts the API's message from a govultr error: "error
// returned from api : <msg>", or "gave up after N attempts, last error:
// \"{\"error\":\"<msg>\",...}\"".
func apiMessage(s string) string {
	if m, ok := strings.CutPrefix(s, "error returned from api : "); ok {
		return m
	}
	if i := strings.Index(s, `\"error\":\"`); i >= 0 {
		m := s[i+len(`\"error\":\"`):]
		if j := strings.Index(m, `\"`); j >= 0 {
			return m[:j]
		}
	}
	return s
}

func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status
	}
	return 0
}

func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

// Provision implements provisioners.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	access, inst, done, err := p.instances.Begin(ctx, &req)
	if done {
		return inst, err
	}
	cid := req.ContractID
	label := InstanceLabel(cid)

	region, why := chooseRegion(req, p.cfg.Regions, p.cfg.DefaultRegion)
	req.Step("choosing a plan in " + region)
	plan, err := p.choosePlan(ctx, req, region)
	if err != nil {
		return provisioners.Instance{}, err
	}
	osID, err := configInt(req, "os_id", p.cfg.DefaultOSID)
	if err != nil {
		return provisioners.Instance{}, err
	}
	userData, err := cloudkit.UserData{Provider: "Vultr", MaxBytes: maxUserData, HasKey: access.HasKey()}.CloudConfig(req)
	if err != nil {
		return provisioners.Instance{}, err
	}
	p.log.Info("creating instance", "contract", cid, "plan", plan.ID, "region", region, "region_from", why, "os_id", osID)

	yes, no := true, false
	create := &govultr.InstanceCreateReq{
		Region: region, Plan: plan.ID, OsID: osID, Label: label, Hostname: label, EnableIPv6: &yes, ActivationEmail: &no,
		Backups: "disabled", UserData: base64.StdEncoding.EncodeToString([]byte(userData)), Tags: []string{cloudkit.TagManaged, cloudkit.ContractTag(cid)},
	}
	in, err := p.instances.Create(ctx, req, access, label, func(ctx context.Context, keyID string) (in *govultr.Instance, err error) {
		if keyID != "" {
			create.SSHKeys = []string{keyID}
			create.Tags = append(create.Tags, cloudkit.KeyTag(keyID))
		}
		err = call(ctx, func(ctx context.Context) (err error) {
			in, _, err = p.c.Instance.Create(ctx, create)
			return err
		})
		return in, err
	})
	if err != nil {
		return provisioners.Instance{}, p.classify(fmt.Sprintf("create instance (plan %s, region %s, os %d)", plan.ID, region, osID), err)
	}
	password := in.DefaultPassword // shown only in this response

	req.Step("waiting for the instance to install and boot")
	ready, err := p.waitReady(ctx, in.ID)
	if err != nil {
		p.instances.Cleanup(ctx, in)
		return provisioners.Instance{}, p.classify("create and start instance "+label, err)
	}
	p.instances.Starts.Mark(ready.ID, p.instances.Now())
	inst = instanceFromVultr(ready)
	if !access.HasKey() {
		inst.RootPassword = password
	}
	return inst, nil
}

// configInt reads an integer setting of the offering (JSON numbers arrive
// as float64; a string of digits is accepted).
func configInt(req provisioners.Request, key string, def int) (int, error) {
	v, ok := req.Config[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case float64:
		if x == float64(int(x)) && x > 0 {
			return int(x), nil
		}
	case int:
		if x > 0 {
			return x, nil
		}
	case string:
		if n, err := strconv.Atoi(x); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, provisioners.Permanent(fmt.Errorf("the offering's %s %v is not an operating system id (a positive whole number, e.g. %d)", key, v, config.DefaultVultrOSID))
}

// choosePlan picks the plan: the offering's "plan" setting, the plans
// table, else the cheapest plan of plan_type in stock that fits.
func (p *Provisioner) choosePlan(ctx context.Context, req provisioners.Request, region string) (govultr.Plan, error) {
	plans, err := p.allPlans(ctx)
	if err != nil {
		return govultr.Plan{}, p.classify("list plans", err)
	}
	var avail *govultr.PlanAvailability
	err = call(ctx, func(ctx context.Context) (err error) {
		avail, _, err = p.c.Region.Availability(ctx, region, "")
		return err
	})
	if isNotFound(err) || statusOf(err) == http.StatusBadRequest {
		return govultr.Plan{}, provisioners.Permanent(fmt.Errorf("region %q is not a Vultr region (%v); set a region id such as %q", region, err, config.DefaultVultrRegion))
	}
	if err != nil {
		return govultr.Plan{}, p.classify("list plans in stock in "+region, err)
	}
	inStock := map[string]bool{}
	for _, id := range avail.AvailablePlans {
		inStock[id] = true
	}
	if id := req.ConfigString("plan", ""); id != "" {
		return checkNamedPlan(plans, inStock, id, "the offering's plan setting", region)
	}
	if id := p.cfg.Plans[req.OfferingID]; id != "" {
		return checkNamedPlan(plans, inStock, id, "plans table entry for offering "+strconv.Quote(req.OfferingID), region)
	}
	return pickPlan(plans, inStock, cloudkit.NeedOf(req), p.cfg.PlanType, region)
}

// resume brings an instance found for the contract to running.
// cloudkit.ErrReplace: it cannot be used; another error: it was removed.
func (p *Provisioner) resume(ctx context.Context, req provisioners.Request, access cloudkit.Access, in *govultr.Instance) (provisioners.Instance, error) {
	if !access.HasKey() || cloudkit.KeyIDFromTags(in.Tags) == "" {
		// Vultr shows the root password only in the create response.
		return provisioners.Instance{}, fmt.Errorf("%w: its root password or SSH key cannot be recovered", cloudkit.ErrReplace)
	}
	if in.PowerStatus == "stopped" {
		req.Step("starting the existing instance")
		err := call(ctx, func(ctx context.Context) error { return p.c.Instance.Start(ctx, in.ID) })
		if err == nil {
			err = p.waitPower(ctx, in.ID, "running")
		}
		if err != nil {
			p.instances.Cleanup(ctx, in)
			return provisioners.Instance{}, p.classify("start instance "+in.Label, err)
		}
	}
	req.Step("waiting for the existing instance to run")
	ready, err := p.waitReady(ctx, in.ID)
	var stopped *stoppedError
	if errors.As(err, &stopped) {
		return provisioners.Instance{}, fmt.Errorf("%w: %v", cloudkit.ErrReplace, err)
	}
	if err != nil {
		p.instances.Cleanup(ctx, in)
		return provisioners.Instance{}, p.classify("start instance "+in.Label, err)
	}
	if _, ok := p.instances.Starts.Get(ready.ID); !ok {
		p.instances.Starts.Mark(ready.ID, p.startedAt(ready))
	}
	return instanceFromVultr(ready), nil
}

// refuseForeign fails if an instance the agent did not tag for the
// contract holds its label: it is never adopted.
func (p *Provisioner) refuseForeign(ctx context.Context, label string) error {
	list, err := p.allInstances(ctx, &govultr.ListOptions{Label: label})
	if err != nil {
		return p.classify("look up instances labelled "+label, err)
	}
	for _, in := range list {
		if in.Label == label {
			return provisioners.Permanent(fmt.Errorf("instance %s is labelled %s but is not tagged %s and %s, so dc-agent did not create it for this contract; relabel or delete it", in.ID, in.Label, cloudkit.TagManaged, cloudkit.TagContractPrefix+"<contract id>"))
		}
	}
	return nil
}

// stoppedError: an instance halted while it should be installing or
// starting (Vultr's sign of a failed install or start).
type stoppedError struct{ label string }

func (e *stoppedError) Error() string {
	return fmt.Sprintf("instance %s stopped while installing or starting", e.label)
}

// waitReady polls an instance until it is active, running, done booting
// (server_status "ok") and has its public addresses, within the action
// timeout. A halt while waiting means the install or start failed.
func (p *Provisioner) waitReady(ctx context.Context, id string) (*govultr.Instance, error) {
	return p.instances.WaitReady(ctx, id, func(in *govultr.Instance) (bool, error) {
		switch {
		case ready(in):
			return true, nil
		case in.PowerStatus == "stopped" && in.ServerStatus != "installingbooting":
			return false, &stoppedError{label: in.Label}
		}
		return false, nil
	}, func(last *govultr.Instance, err error) error {
		if last == nil {
			return fmt.Errorf("waiting for instance %s to start: %w", id, err)
		}
		what := "to install and boot"
		if last.ServerStatus == "ok" {
			what = "for its public address"
		}
		return fmt.Errorf("waiting for instance %s %s (status %s, power %s, server %s): %w", last.Label, what, last.Status, last.PowerStatus, last.ServerStatus, err)
	})
}

func ready(in *govultr.Instance) bool {
	return in.Status == "active" && in.PowerStatus == "running" && in.ServerStatus == "ok" &&
		in.MainIP != "" && in.MainIP != "0.0.0.0" && (in.V6MainIP != "" || !cloudkit.HasTag(in.Features, "ipv6"))
}

// ensureKey returns the key object for the requester's key: an existing one
// holding the same key (the agent's or the provider's), else a new one
// named dc-key-... Called with the key lock of Machines.Create held.
func (p *Provisioner) ensureKey(ctx context.Context, a cloudkit.Access) (*govultr.SSHKey, error) {
	keys, err := p.allKeys(ctx)
	if err != nil {
		return nil, p.classify("list SSH keys", err)
	}
	for i := range keys {
		if cloudkit.SameKey(keys[i].SSHKey, a.Line) {
			return &keys[i], nil
		}
	}
	var k *govultr.SSHKey
	err = call(ctx, func(ctx context.Context) (err error) {
		k, _, err = p.c.SSHKey.Create(ctx, &govultr.SSHKeyReq{Name: cloudkit.KeyName(a.Key), SSHKey: a.Line})
		return err
	})
	if err != nil {
		return nil, p.classify("upload SSH key", err)
	}
	return k, nil
}

// Terminate implements provisioners.Provisioner.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	return p.instances.Terminate(ctx, externalID)
}

// Pause implements provisioners.Pauser: halt (power off), disks kept.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	return p.instances.Pause(ctx, externalID, "halt", func(in *govultr.Instance) bool { return in.PowerStatus == "stopped" },
		func(ctx context.Context, in *govultr.Instance) error {
			if err := call(ctx, func(ctx context.Context) error { return p.c.Instance.Halt(ctx, in.ID) }); err != nil {
				return p.classify("halt instance "+in.Label, err)
			}
			if err := p.waitPower(ctx, in.ID, "stopped"); err != nil {
				return p.classify("halt instance "+in.Label, err)
			}
			return nil
		})
}

// Resume implements provisioners.Pauser: start and wait until it runs.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	return p.instances.Resume(ctx, externalID, "start", func(in *govultr.Instance) bool { return in.PowerStatus == "running" },
		func(ctx context.Context, in *govultr.Instance) error {
			if err := call(ctx, func(ctx context.Context) error { return p.c.Instance.Start(ctx, in.ID) }); err != nil {
				return p.classify("start instance "+in.Label, err)
			}
			if err := p.waitPower(ctx, in.ID, "running"); err != nil {
				return p.classify("start instance "+in.Label, err)
			}
			return nil
		},
		func(ctx context.Context, id string) error {
			_, err := p.waitReady(ctx, id)
			return err
		})
}

// waitPower polls until an instance's power_status is want.
func (p *Provisioner) waitPower(ctx context.Context, id, want string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	for {
		var in *govultr.Instance
		err := call(ctx, func(ctx context.Context) (err error) {
			in, _, err = p.c.Instance.Get(ctx, id)
			return err
		})
		if err != nil {
			return err
		}
		if in.PowerStatus == want {
			return nil
		}
		if err := cloudkit.Sleep(ctx, p.poll); err != nil {
			return fmt.Errorf("instance %s is still %s: %w", in.Label, in.PowerStatus, err)
		}
	}
}

// HealthCheck implements provisioners.Provisioner.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	id := strings.TrimSpace(externalID)
	var in *govultr.Instance
	err := call(ctx, func(ctx context.Context) (err error) {
		in, _, err = p.c.Instance.Get(ctx, id)
		return err
	})
	if isNotFound(err) {
		p.instances.Starts.Forget(id)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: fmt.Sprintf("instance %s no longer exists", id)}, nil
	}
	if err != nil {
		return provisioners.Health{Status: provisioners.Unknown, Reason: err.Error()}, p.classify("read instance "+id, err)
	}
	switch {
	case in.PowerStatus == "stopped":
		p.instances.Starts.Forget(id)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "instance is stopped"}, nil
	case in.Status == "suspended":
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "instance is suspended (Vultr account)"}, nil
	case in.Status == "active" && in.ServerStatus == "ok":
		return p.instances.Uptime(id, func() time.Time { return p.startedAt(in) }), nil
	default:
		return provisioners.Health{Status: provisioners.Unknown, Reason: fmt.Sprintf("instance is %s (server %s)", in.Status, in.ServerStatus)}, nil
	}
}

// startedAt is a running instance's creation time: Vultr reports neither
// uptime nor start events, so an instance first seen running counts from
// there.
func (p *Provisioner) startedAt(in *govultr.Instance) time.Time {
	if t, err := time.Parse(time.RFC3339, in.DateCreated); err == nil {
		return t
	}
	return p.instances.Now()
}

// GetInstance implements provisioners.Provisioner.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	return p.instances.GetInstance(ctx, contractID)
}

// List implements provisioners.Provisioner: every instance tagged dc-agent.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	return p.instances.List(ctx)
}

// pages collects every page of a cursor-paginated list call.
func pages[T any](ctx context.Context, opt govultr.ListOptions, list func(context.Context, *govultr.ListOptions) ([]T, *govultr.Meta, error)) ([]T, error) {
	var out []T
	opt.PerPage = 500
	for range 1000 {
		var items []T
		var meta *govultr.Meta
		o := opt
		err := call(ctx, func(ctx context.Context) (err error) {
			items, meta, err = list(ctx, &o)
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if meta == nil || meta.Links == nil || meta.Links.Next == "" || meta.Links.Next == opt.Cursor {
			return out, nil
		}
		opt.Cursor = meta.Links.Next
	}
	return nil, errors.New("the API returned more than 1000 pages")
}

func (p *Provisioner) allInstances(ctx context.Context, opt *govultr.ListOptions) ([]govultr.Instance, error) {
	return pages(ctx, *opt, func(ctx context.Context, o *govultr.ListOptions) ([]govultr.Instance, *govultr.Meta, error) {
		l, m, _, err := p.c.Instance.List(ctx, o)
		return l, m, err
	})
}

func (p *Provisioner) allKeys(ctx context.Context) ([]govultr.SSHKey, error) {
	return pages(ctx, govultr.ListOptions{}, func(ctx context.Context, o *govultr.ListOptions) ([]govultr.SSHKey, *govultr.Meta, error) {
		l, m, _, err := p.c.SSHKey.List(ctx, o)
		return l, m, err
	})
}

func (p *Provisioner) allPlans(ctx context.Context) ([]govultr.Plan, error) {
	return pages(ctx, govultr.ListOptions{}, func(ctx context.Context, o *govultr.ListOptions) ([]govultr.Plan, *govultr.Meta, error) {
		l, m, _, err := p.c.Plan.List(ctx, "", o)
		return l, m, err
	})
}

// instanceFromVultr converts an API instance.
func instanceFromVultr(in *govultr.Instance) provisioners.Instance {
	inst := provisioners.Instance{
		ExternalID: in.ID,
		ContractID: cloudkit.ContractIDFromTags(in.Tags),
		Name:       in.Label,
		SSHPort:    22,
		Status:     in.Status + "/" + in.PowerStatus,
		AdditionalDetails: map[string]any{
			"provider":    "vultr",
			"instance_id": in.ID,
			"plan":        in.Plan,
			"region":      in.Region,
			"os":          in.Os,
		},
	}
	inst.CreatedAt, _ = time.Parse(time.RFC3339, in.DateCreated)
	if in.MainIP != "0.0.0.0" {
		inst.IPAddress = in.MainIP
	}
	inst.IPv6Address = in.V6MainIP
	return inst
}

// classify wraps an API error with what was being done, a hint, and
// whether a retry can help.
func (p *Provisioner) classify(op string, err error) error {
	if e := cloudkit.Classified(op, err, p.cfg.ActionTimeoutSeconds); e != nil {
		return e
	}
	var se *stoppedError
	if errors.As(err, &se) {
		return provisioners.Retryable(fmt.Errorf("%s: %w (Vultr halted it); will retry with a new instance", op, se))
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		return provisioners.Retryable(fmt.Errorf("%s: %w", op, err))
	}
	switch {
	case ae.status == http.StatusTooManyRequests:
		return provisioners.Retryable(fmt.Errorf("%s: Vultr API rate limit exceeded (%s; Vultr allows 30 requests per second per address, lower requests_per_second if other tools share it); will retry", op, ae.msg))
	case ae.status == http.StatusUnauthorized:
		return provisioners.Retryable(fmt.Errorf("%s: Vultr rejected the API key (%s); put a valid API key in api_token_file", op, ae.msg))
	case ae.status == http.StatusForbidden:
		return provisioners.Retryable(fmt.Errorf("%s: the Vultr API key may not do this from here (%s); allow this host's address in the key's access control", op, ae.msg))
	case ae.status == http.StatusBadRequest && strings.Contains(ae.msg, "not available"):
		return provisioners.Retryable(fmt.Errorf("%s: Vultr cannot place the instance now (%s); capacity in that region is exhausted, will retry", op, ae.msg))
	case ae.status == http.StatusBadRequest, ae.status == http.StatusUnprocessableEntity:
		return provisioners.Permanent(fmt.Errorf("%s: Vultr rejected the request: %s", op, ae.msg))
	}
	return provisioners.Retryable(fmt.Errorf("%s: %w", op, ae))
}

// Catalog implements provisioners.Cataloger: the account, the regions and
// the plans of plan_type.
func (p *Provisioner) Catalog(ctx context.Context) (provisioners.Catalog, error) {
	var acct *govultr.Account
	err := call(ctx, func(ctx context.Context) (err error) {
		acct, _, err = p.c.Account.Get(ctx)
		return err
	})
	if err != nil {
		return provisioners.Catalog{}, p.classify("read the Vultr account", err)
	}
	regions, err := pages(ctx, govultr.ListOptions{}, func(ctx context.Context, o *govultr.ListOptions) ([]govultr.Region, *govultr.Meta, error) {
		l, m, _, err := p.c.Region.List(ctx, o)
		return l, m, err
	})
	if err != nil {
		return provisioners.Catalog{}, p.classify("list regions", err)
	}
	plans, err := p.allPlans(ctx)
	if err != nil {
		return provisioners.Catalog{}, p.classify("list plans", err)
	}
	c := provisioners.Catalog{Account: acct.Email}
	for _, r := range regions {
		c.Regions = append(c.Regions, provisioners.CatalogRegion{ID: r.ID, Name: r.City + ", " + r.Country})
	}
	for _, pl := range plans {
		if pl.Type == p.cfg.PlanType && pl.GPUType == "" {
			c.Sizes = append(c.Sizes, provisioners.CatalogSize{ID: pl.ID, VCPUs: pl.VCPUCount, MemoryMB: int64(pl.RAM), DiskGB: int64(pl.Disk),
				MonthlyPrice: float64(pl.MonthlyCost), Regions: pl.Locations})
		}
	}
	return c, nil
}
