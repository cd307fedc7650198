// Package digitalocean provisions contracts as DigitalOcean droplets through
// godo: the offering picks a size (or the smallest that fits), the
// datacenter city a region; the requester's SSH key is uploaded (or reused)
// as a key object; droplets carry the contract id in tags (see naming.go)
// so that a restarted agent finds them again.
package digitalocean

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// Type is the registry name.
const Type = config.TypeDigitalOcean

// maxUserData is DigitalOcean's limit on user_data (64 KiB).
const maxUserData = 64 * 1024

// DefaultEndpoint is the DigitalOcean API.
const DefaultEndpoint = "https://api.digitalocean.com/"

// Options tune the HTTP client; zero values are production defaults.
type Options = cloudkit.Options

// TestOptions are Options for tests and benchmarks against the simulator.
func TestOptions() Options { return cloudkit.TestOptions() }

// Provisioner is the DigitalOcean backend.
type Provisioner struct {
	cfg     config.DigitalOceanConfig
	c       *godo.Client
	tr      *cloudkit.Transport
	log     *slog.Logger
	poll    time.Duration
	timeout time.Duration

	// droplets is the lifecycle shared with Vultr, on droplets.
	droplets *cloudkit.Machines[godo.Droplet]
}

// NewFactory returns a registry factory using opts.
func NewFactory(opts Options) provisioners.Factory {
	return cloudkit.Factory(Type, func(pc config.ProvisionerConfig) *config.DigitalOceanConfig { return pc.DigitalOcean },
		func(c *config.DigitalOceanConfig) (string, string) { return c.APITokenFile, c.APIToken },
		func(cfg config.DigitalOceanConfig, token string, log *slog.Logger) (provisioners.Provisioner, error) {
			opts.Logger = cmp.Or(opts.Logger, log)
			return New(cfg, token, opts)
		})
}

// Factory is the production factory.
var Factory = NewFactory(Options{})

// Register adds the production factory to r.
func Register(r *provisioners.Registry) { r.Register(Type, Factory) }

// New builds the backend from its config section and the API token.
func New(cfg config.DigitalOceanConfig, token string, opts Options) (*Provisioner, error) {
	token, err := cloudkit.CheckToken(token, "DigitalOcean", "put a personal access token with read and write scope (Control Panel > API > Tokens) in api_token_file")
	if err != nil {
		return nil, err
	}
	if cfg.DefaultRegion == "" {
		cfg.DefaultRegion = config.DefaultDORegion
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = config.DefaultDOImage
	}
	timeout, poll := cloudkit.Waits(&cfg.ActionTimeoutSeconds, &cfg.PollIntervalMs)
	hc, tr := opts.Client(token, nil)
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if !strings.HasSuffix(endpoint, "/") {
		endpoint += "/" // godo resolves "v2/..." against it
	}
	c, err := godo.New(hc, godo.SetBaseURL(endpoint), godo.SetUserAgent("dc-agent/"+buildinfo.Version))
	if err != nil {
		return nil, fmt.Errorf("digitalocean endpoint %q: %w", endpoint, err)
	}
	p := &Provisioner{
		cfg: cfg, c: c, tr: tr, log: opts.Logger.With("provisioner", Type), poll: poll, timeout: timeout,
	}
	p.droplets = &cloudkit.Machines[godo.Droplet]{API: p.api(), Keys: p.keys(), Noun: "droplet", NameKey: "name",
		Log: p.log, Now: opts.Now, Poll: p.poll, Timeout: p.timeout}
	return p, nil
}

// api is what the shared lifecycle does on DigitalOcean: droplets are
// found by tag, ids are numbers, a droplet's contract tag and an unused
// key's tag are deleted with it.
func (p *Provisioner) api() cloudkit.MachineAPI[godo.Droplet] {
	return cloudkit.MachineAPI[godo.Droplet]{
		ID:       func(d *godo.Droplet) string { return strconv.Itoa(d.ID) },
		Name:     func(d *godo.Droplet) string { return d.Name },
		Status:   func(d *godo.Droplet) string { return d.Status },
		Tags:     func(d *godo.Droplet) []string { return d.Tags },
		Instance: instanceFromDroplet,
		Older:    func(a, b *godo.Droplet) bool { return a.ID < b.ID },
		ParseID: func(externalID string) error {
			_, err := parseID(externalID)
			return err
		},
		Get: func(ctx context.Context, id string) (*godo.Droplet, error) {
			n, err := parseID(id)
			if err != nil {
				return nil, err
			}
			d, _, err := p.c.Droplets.Get(ctx, n)
			if isNotFound(err) {
				return nil, nil
			}
			return d, err
		},
		ListTagged: func(ctx context.Context, tag string) ([]godo.Droplet, error) {
			return all(ctx, func(ctx context.Context, o *godo.ListOptions) ([]godo.Droplet, *godo.Response, error) {
				return p.c.Droplets.ListByTag(ctx, tag, o)
			})
		},
		Delete: func(ctx context.Context, d *godo.Droplet) error {
			if _, err := p.c.Droplets.Delete(ctx, d.ID); err != nil && !isNotFound(err) {
				return err
			}
			return nil
		},
		RefuseForeign: p.refuseForeign,
		Resume:        p.resume,
		AfterDestroy: func(ctx context.Context, d *godo.Droplet) {
			if cid := ContractIDFromTags(d.Tags); cid != "" {
				p.deleteTag(ctx, contractTag(cid))
			}
		},
		Classify: p.classify,
	}
}

// keys is how SSH key objects are kept on DigitalOcean: key ids are
// numbers, a droplet is tagged with its key's id, and the tag goes with
// the key's last droplet.
func (p *Provisioner) keys() *cloudkit.Keys {
	return &cloudkit.Keys{
		Log: p.log,
		Ensure: func(ctx context.Context, a cloudkit.Access) (string, error) {
			k, err := p.ensureKey(ctx, a.Key, a.Line)
			if err != nil {
				return "", err
			}
			return strconv.Itoa(k.ID), nil
		},
		InUse: func(ctx context.Context, keyID string) (bool, error) {
			users, _, err := p.c.Droplets.ListByTag(ctx, cloudkit.KeyTag(keyID), &godo.ListOptions{PerPage: 1})
			return len(users) > 0, err
		},
		Own: func(ctx context.Context, keyID string) (bool, error) {
			id, err := strconv.Atoi(keyID)
			if err != nil {
				return false, err
			}
			k, _, err := p.c.Keys.GetByID(ctx, id)
			if err != nil {
				return false, err
			}
			return strings.HasPrefix(k.Name, cloudkit.KeyNamePrefix), nil
		},
		Delete: func(ctx context.Context, keyID string) error {
			id, err := strconv.Atoi(keyID)
			if err != nil {
				return err
			}
			if _, err := p.c.Keys.DeleteByID(ctx, id); err != nil && !isNotFound(err) {
				return err
			}
			return nil
		},
		AfterRelease: func(ctx context.Context, keyID string) { p.deleteTag(ctx, cloudkit.KeyTag(keyID)) },
	}
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true, Pause: true}
}

// Provision implements provisioners.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	access, inst, done, err := p.droplets.Begin(ctx, &req)
	if done {
		return inst, err
	}
	cid := req.ContractID
	name := DropletName(cid)

	region, why := chooseRegion(req, p.cfg.Regions, p.cfg.DefaultRegion)
	req.Step("choosing a droplet size in " + region)
	size, err := p.chooseSize(ctx, req, region)
	if err != nil {
		return provisioners.Instance{}, err
	}
	image := req.ConfigString("image", p.cfg.DefaultImage)
	ud := cloudkit.UserData{Provider: "DigitalOcean", MaxBytes: maxUserData, HasKey: access.HasKey()}
	var password string
	if !access.HasKey() {
		// The API returns no password (it would e-mail one to the account
		// owner): cloud-init sets one the agent made.
		if password, ud.RootPasswordHash, err = cloudkit.RootPassword(); err != nil {
			return provisioners.Instance{}, err
		}
	}
	userData, err := ud.CloudConfig(req)
	if err != nil {
		return provisioners.Instance{}, err
	}
	p.log.Info("creating droplet", "contract", cid, "size", size.Slug, "region", region, "region_from", why, "image", image)

	create := &godo.DropletCreateRequest{
		Name: name, Region: region, Size: size.Slug, Image: dropletImage(image), IPv6: true,
		UserData: userData, Tags: []string{TagManaged, contractTag(cid)},
	}
	var resp *godo.Response
	d, err := p.droplets.Create(ctx, req, access, name, func(ctx context.Context, keyID string) (d *godo.Droplet, err error) {
		if keyID != "" {
			id, _ := strconv.Atoi(keyID)
			create.SSHKeys = []godo.DropletCreateSSHKey{{ID: id}}
			create.Tags = append(create.Tags, cloudkit.KeyTag(keyID))
		}
		d, resp, err = p.c.Droplets.Create(ctx, create)
		return d, err
	})
	if err != nil {
		return provisioners.Instance{}, p.classify(fmt.Sprintf("create droplet (size %s, region %s, image %s)", size.Slug, region, image), err)
	}

	req.Step("waiting for the droplet to start")
	if id := createAction(resp); id != 0 {
		err = p.waitAction(ctx, id)
	}
	var ready *godo.Droplet
	if err == nil {
		req.Step("waiting for the droplet's addresses")
		ready, err = p.waitReady(ctx, d.ID)
	}
	if err != nil {
		p.droplets.Cleanup(ctx, d)
		return provisioners.Instance{}, p.classify("create and start droplet "+name, err)
	}
	p.droplets.Starts.Mark(strconv.Itoa(ready.ID), p.droplets.Now())
	inst = instanceFromDroplet(ready)
	inst.RootPassword = password
	return inst, nil
}

func dropletImage(image string) godo.DropletCreateImage {
	if id, err := strconv.Atoi(image); err == nil && id > 0 {
		return godo.DropletCreateImage{ID: id} // a snapshot or custom image
	}
	return godo.DropletCreateImage{Slug: image}
}

// createAction is the id of the "create" action a droplet creation returned.
func createAction(resp *godo.Response) int {
	if resp == nil || resp.Links == nil {
		return 0
	}
	for _, a := range resp.Links.Actions {
		if a.Rel == "create" {
			return a.ID
		}
	}
	return 0
}

// chooseSize picks the size: the offering's "size" setting, the sizes
// table, default_size if it covers the offering, else the smallest fit.
func (p *Provisioner) chooseSize(ctx context.Context, req provisioners.Request, region string) (godo.Size, error) {
	sizes, err := all(ctx, p.c.Sizes.List)
	if err != nil {
		return godo.Size{}, p.classify("list droplet sizes", err)
	}
	if s := req.ConfigString("size", ""); s != "" {
		return checkNamedSize(sizes, s, "the offering's size setting", region)
	}
	if s := p.cfg.Sizes[req.OfferingID]; s != "" {
		return checkNamedSize(sizes, s, "sizes table entry for offering "+strconv.Quote(req.OfferingID), region)
	}
	n := cloudkit.NeedOf(req)
	if s := p.cfg.DefaultSize; s != "" {
		sz, err := checkNamedSize(sizes, s, "default_size", region)
		if err != nil || fits(n, sz) {
			return sz, err
		}
		p.log.Warn("default_size is smaller than the offering; picking the smallest size that fits", "default_size", s, "offering", req.OfferingID, "needs", n.String())
	}
	return pickSize(sizes, n, region)
}

// resume brings a droplet found for the contract (left by a crashed or
// timed-out attempt) to active. cloudkit.ErrReplace: it cannot be used and
// must be replaced; another error: the droplet was removed, the attempt
// fails.
func (p *Provisioner) resume(ctx context.Context, req provisioners.Request, access cloudkit.Access, d *godo.Droplet) (provisioners.Instance, error) {
	if access.HasKey() != (keyIDFromTags(d.Tags) != 0) || !access.HasKey() {
		// Without a key the password of the first attempt is lost (the
		// API cannot say it); with a different access, it is the wrong
		// machine for the tenant.
		return provisioners.Instance{}, fmt.Errorf("%w: its root password or SSH key cannot be recovered", cloudkit.ErrReplace)
	}
	inst, err := p.bringUp(ctx, req, d)
	if errors.Is(err, cloudkit.ErrReplace) {
		return provisioners.Instance{}, err
	}
	if err != nil {
		p.droplets.Cleanup(ctx, d)
		return provisioners.Instance{}, err
	}
	return inst, nil
}

func (p *Provisioner) bringUp(ctx context.Context, req provisioners.Request, d *godo.Droplet) (provisioners.Instance, error) {
	if d.Status == "new" {
		// Creation in progress or failed: its create action says which.
		acts, _, err := p.c.Droplets.Actions(ctx, d.ID, &godo.ListOptions{PerPage: 50})
		if err != nil {
			return provisioners.Instance{}, p.classify(fmt.Sprintf("list actions of droplet %d", d.ID), err)
		}
		for _, a := range acts {
			if a.Type != "create" {
				continue
			}
			switch a.Status {
			case "errored":
				return provisioners.Instance{}, fmt.Errorf("%w: its creation failed", cloudkit.ErrReplace)
			case godo.ActionInProgress:
				req.Step("waiting for the existing droplet to be created")
				if err := p.waitAction(ctx, a.ID); err != nil {
					return provisioners.Instance{}, p.classify("create droplet "+d.Name, err)
				}
			}
			break
		}
	}
	if d.Status == "off" {
		req.Step("powering on the existing droplet")
		if err := p.power(ctx, d.ID, "power_on"); err != nil {
			return provisioners.Instance{}, p.classify("power on droplet "+d.Name, err)
		}
	}
	req.Step("waiting for the existing droplet to run")
	ready, err := p.waitReady(ctx, d.ID)
	if err != nil {
		return provisioners.Instance{}, p.classify("start droplet "+d.Name, err)
	}
	if _, ok := p.droplets.Starts.Get(strconv.Itoa(ready.ID)); !ok {
		p.droplets.Starts.Mark(strconv.Itoa(ready.ID), p.startedAt(ctx, ready))
	}
	return instanceFromDroplet(ready), nil
}

// refuseForeign fails if a droplet the agent did not tag for the contract
// holds its name: it is never adopted.
func (p *Provisioner) refuseForeign(ctx context.Context, name string) error {
	list, err := all(ctx, func(ctx context.Context, o *godo.ListOptions) ([]godo.Droplet, *godo.Response, error) {
		return p.c.Droplets.ListByName(ctx, name, o)
	})
	if err != nil {
		return p.classify("look up droplets named "+name, err)
	}
	for _, d := range list {
		if strings.EqualFold(d.Name, name) {
			return provisioners.Permanent(fmt.Errorf("droplet %d is named %s but is not tagged %s and %s, so dc-agent did not create it for this contract; rename or delete it", d.ID, d.Name, TagManaged, TagContractPrefix+"<contract id>"))
		}
	}
	return nil
}

// waitAction polls an action until it completes, within the action timeout.
func (p *Provisioner) waitAction(ctx context.Context, id int) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	state := fmt.Sprintf("action %d", id)
	for {
		a, _, err := p.c.Actions.Get(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s did not finish: %w", state, err)
			}
			return err
		}
		switch a.Status {
		case godo.ActionCompleted:
			return nil
		case "errored":
			return &actionError{typ: a.Type, id: a.ID, droplet: a.ResourceID}
		}
		state = fmt.Sprintf("%s action %d (%s)", a.Type, a.ID, a.Status)
		if err := cloudkit.Sleep(ctx, p.poll); err != nil {
			return fmt.Errorf("%s did not finish: %w", state, err)
		}
	}
}

// actionError is an action that ended "errored" (the API says no more).
type actionError struct {
	typ         string
	id, droplet int
}

func (e *actionError) Error() string {
	return fmt.Sprintf("DigitalOcean %s action %d of droplet %d errored", e.typ, e.id, e.droplet)
}

// waitReady polls a droplet until it is active with its public addresses
// (IPv4, and IPv6 when enabled), within the action timeout. Addresses come
// after creation, sometimes after the droplet is already active.
func (p *Provisioner) waitReady(ctx context.Context, id int) (*godo.Droplet, error) {
	return p.droplets.WaitReady(ctx, strconv.Itoa(id), func(d *godo.Droplet) (bool, error) {
		v4, _ := d.PublicIPv4()
		v6, _ := d.PublicIPv6()
		switch {
		case d.Status == "active" && v4 != "" && (v6 != "" || !hasTag(d.Features, "ipv6")):
			return true, nil
		case d.Status == "off" || d.Status == "archive":
			return false, provisioners.Retryable(fmt.Errorf("droplet %s is %s instead of starting", d.Name, d.Status))
		}
		return false, nil
	}, func(last *godo.Droplet, err error) error {
		if last == nil {
			return fmt.Errorf("waiting for droplet %d to become active: %w", id, err)
		}
		what := "to become active"
		if last.Status == "active" {
			what = "for its public address"
		}
		return fmt.Errorf("waiting for droplet %s %s (status %s): %w", last.Name, what, last.Status, err)
	})
}

// power runs a power action on a droplet and waits for it.
func (p *Provisioner) power(ctx context.Context, id int, typ string) error {
	var a *godo.Action
	var err error
	if typ == "power_on" {
		a, _, err = p.c.DropletActions.PowerOn(ctx, id)
	} else {
		a, _, err = p.c.DropletActions.PowerOff(ctx, id)
	}
	if err != nil {
		return err
	}
	return p.waitAction(ctx, a.ID)
}

// ensureKey returns the key object for pub: an existing one with the same
// fingerprint (the agent's or the provider's), else a new one named
// dc-key-... Called with the key lock of Machines.Create held.
func (p *Provisioner) ensureKey(ctx context.Context, pub ssh.PublicKey, line string) (*godo.Key, error) {
	fp := ssh.FingerprintLegacyMD5(pub)
	k, _, err := p.c.Keys.GetByFingerprint(ctx, fp)
	if err == nil {
		return k, nil
	}
	if !isNotFound(err) {
		return nil, p.classify("look up SSH key "+fp, err)
	}
	k, _, err = p.c.Keys.Create(ctx, &godo.KeyCreateRequest{Name: cloudkit.KeyName(pub), PublicKey: line})
	if err != nil && statusOf(err) == http.StatusUnprocessableEntity {
		// Uploaded concurrently (another agent on the same account).
		if k2, _, err2 := p.c.Keys.GetByFingerprint(ctx, fp); err2 == nil {
			return k2, nil
		}
	}
	if err != nil {
		return nil, p.classify("upload SSH key", err)
	}
	return k, nil
}

func (p *Provisioner) deleteTag(ctx context.Context, tag string) {
	if _, err := p.c.Tags.Delete(ctx, tag); err != nil && !isNotFound(err) {
		p.log.Warn("could not delete tag", "tag", tag, "err", err)
	}
}

// Terminate implements provisioners.Provisioner.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	return p.droplets.Terminate(ctx, externalID)
}

// Pause implements provisioners.Pauser: power off, disks kept.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	return p.droplets.Pause(ctx, externalID, "power off", func(d *godo.Droplet) bool { return d.Status == "off" },
		func(ctx context.Context, d *godo.Droplet) error {
			if err := p.power(ctx, d.ID, "power_off"); err != nil {
				return p.classify("power off droplet "+d.Name, err)
			}
			return nil
		})
}

// Resume implements provisioners.Pauser: power on and wait until it runs.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	return p.droplets.Resume(ctx, externalID, "power on", func(d *godo.Droplet) bool { return d.Status == "active" },
		func(ctx context.Context, d *godo.Droplet) error {
			if err := p.power(ctx, d.ID, "power_on"); err != nil {
				return p.classify("power on droplet "+d.Name, err)
			}
			return nil
		},
		func(ctx context.Context, id string) error {
			n, _ := strconv.Atoi(id)
			_, err := p.waitReady(ctx, n)
			return err
		})
}

func parseID(externalID string) (int, error) {
	id, err := strconv.Atoi(strings.TrimSpace(externalID))
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a DigitalOcean droplet id (a positive number)", externalID)
	}
	return id, nil
}

// HealthCheck implements provisioners.Provisioner: the droplet status, and
// uptime since its last start.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	id, err := parseID(externalID)
	if err != nil {
		return provisioners.Health{}, err
	}
	d, _, err := p.c.Droplets.Get(ctx, id)
	if isNotFound(err) {
		p.droplets.Starts.Forget(externalID)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: fmt.Sprintf("droplet %d no longer exists", id)}, nil
	}
	if err != nil {
		return provisioners.Health{Status: provisioners.Unknown, Reason: err.Error()}, p.classify(fmt.Sprintf("read droplet %d", id), err)
	}
	switch d.Status {
	case "active":
		return p.droplets.Uptime(externalID, func() time.Time { return p.startedAt(ctx, d) }), nil
	case "off", "archive":
		p.droplets.Starts.Forget(externalID)
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "droplet is " + d.Status}, nil
	default:
		return provisioners.Health{Status: provisioners.Unknown, Reason: "droplet is " + d.Status}, nil
	}
}

// startActions are the actions after which a droplet runs afresh.
var startActions = map[string]bool{"create": true, "power_on": true, "reboot": true, "power_cycle": true}

// startedAt is when a running droplet last started: the last completed
// start action (one extra call), else its creation. DigitalOcean reports
// no uptime itself.
func (p *Provisioner) startedAt(ctx context.Context, d *godo.Droplet) time.Time {
	t, _ := time.Parse(time.RFC3339, d.Created)
	acts, _, err := p.c.Droplets.Actions(ctx, d.ID, &godo.ListOptions{PerPage: 50})
	if err == nil {
		for _, a := range acts { // newest first
			if startActions[a.Type] && a.Status == godo.ActionCompleted && a.CompletedAt != nil {
				return a.CompletedAt.Time
			}
		}
	}
	if t.IsZero() {
		return p.droplets.Now()
	}
	return t
}

// GetInstance implements provisioners.Provisioner.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	return p.droplets.GetInstance(ctx, contractID)
}

// List implements provisioners.Provisioner: every droplet tagged dc-agent.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	return p.droplets.List(ctx)
}

// all collects every page of a list call.
func all[T any](ctx context.Context, list func(context.Context, *godo.ListOptions) ([]T, *godo.Response, error)) ([]T, error) {
	var out []T
	opt := &godo.ListOptions{PerPage: 200}
	for range 1000 {
		items, resp, err := list(ctx, opt)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if resp == nil || resp.Links == nil || resp.Links.IsLastPage() {
			return out, nil
		}
		page, err := resp.Links.CurrentPage()
		if err != nil || page < opt.Page {
			return nil, fmt.Errorf("bad pagination links from the API (%v)", err)
		}
		opt = &godo.ListOptions{PerPage: 200, Page: page + 1}
	}
	return nil, errors.New("the API returned more than 1000 pages")
}

// instanceFromDroplet converts an API droplet.
func instanceFromDroplet(d *godo.Droplet) provisioners.Instance {
	inst := provisioners.Instance{
		ExternalID: strconv.Itoa(d.ID),
		ContractID: ContractIDFromTags(d.Tags),
		Name:       d.Name,
		SSHPort:    22,
		Status:     d.Status,
		AdditionalDetails: map[string]any{
			"provider":   "digitalocean",
			"droplet_id": d.ID,
			"size":       d.SizeSlug,
		},
	}
	inst.CreatedAt, _ = time.Parse(time.RFC3339, d.Created)
	inst.IPAddress, _ = d.PublicIPv4()
	inst.IPv6Address, _ = d.PublicIPv6()
	if d.Region != nil {
		inst.AdditionalDetails["region"] = d.Region.Slug
	}
	if d.Image != nil && d.Image.Slug != "" {
		inst.AdditionalDetails["image"] = d.Image.Slug
	}
	return inst
}

func statusOf(err error) int {
	var er *godo.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

// classify wraps an API error with what was being done, a hint, and
// whether a retry can help.
func (p *Provisioner) classify(op string, err error) error {
	if e := cloudkit.Classified(op, err, p.cfg.ActionTimeoutSeconds); e != nil {
		return e
	}
	var ae *actionError
	if errors.As(err, &ae) {
		return provisioners.Retryable(fmt.Errorf("%s: %w", op, ae))
	}
	var er *godo.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil {
		return provisioners.Retryable(fmt.Errorf("%s: %w", op, err))
	}
	msg := er.Message
	switch code := er.Response.StatusCode; {
	case code == http.StatusTooManyRequests:
		m := "DigitalOcean API rate limit exceeded"
		if d := p.tr.ResetIn(); d > 0 {
			m += fmt.Sprintf("; the hourly limit resets in %s", d.Round(time.Second))
		}
		return provisioners.Retryable(fmt.Errorf("%s: %s (%s); will retry", op, m, msg))
	case code == http.StatusUnauthorized:
		return provisioners.Retryable(fmt.Errorf("%s: DigitalOcean rejected the API token (%s); put a valid personal access token with read and write scope in api_token_file", op, msg))
	case code == http.StatusForbidden:
		return provisioners.Retryable(fmt.Errorf("%s: the DigitalOcean API token may not do this (%s); use a token with write scope", op, msg))
	case code == http.StatusUnprocessableEntity && (strings.Contains(msg, "not available") || strings.Contains(msg, "pending event")):
		return provisioners.Retryable(fmt.Errorf("%s: DigitalOcean cannot do this now (%s); will retry", op, msg))
	case code == http.StatusUnprocessableEntity && strings.Contains(strings.ToLower(msg), "limit"):
		return provisioners.Retryable(fmt.Errorf("%s: the DigitalOcean account's limit is reached (%s); ask DigitalOcean to raise it", op, msg))
	case code == http.StatusUnprocessableEntity, code == http.StatusBadRequest:
		return provisioners.Permanent(fmt.Errorf("%s: DigitalOcean rejected the request: %s", op, msg))
	}
	return provisioners.Retryable(fmt.Errorf("%s: DigitalOcean API error %d: %s", op, er.Response.StatusCode, msg))
}

// Catalog implements provisioners.Cataloger: the account, its available
// regions and the sizes that can be created now.
func (p *Provisioner) Catalog(ctx context.Context) (provisioners.Catalog, error) {
	acct, _, err := p.c.Account.Get(ctx)
	if err != nil {
		return provisioners.Catalog{}, p.classify("read the DigitalOcean account", err)
	}
	regions, err := all(ctx, p.c.Regions.List)
	if err != nil {
		return provisioners.Catalog{}, p.classify("list regions", err)
	}
	sizes, err := all(ctx, p.c.Sizes.List)
	if err != nil {
		return provisioners.Catalog{}, p.classify("list droplet sizes", err)
	}
	c := provisioners.Catalog{Account: acct.Email}
	for _, r := range regions {
		if r.Available {
			c.Regions = append(c.Regions, provisioners.CatalogRegion{ID: r.Slug, Name: r.Name})
		}
	}
	for _, s := range sizes {
		if s.Available && s.GPUInfo == nil {
			c.Sizes = append(c.Sizes, provisioners.CatalogSize{ID: s.Slug, VCPUs: s.Vcpus, MemoryMB: int64(s.Memory), DiskGB: int64(s.Disk),
				MonthlyPrice: s.PriceMonthly, Regions: s.Regions})
		}
	}
	return c, nil
}
