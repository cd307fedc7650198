package setup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners/vultr"
)

// CloudTypes are the cloud API backends `setup` configures from a token.
var CloudTypes = []string{config.TypeDigitalOcean, config.TypeVultr}

// CloudAnswers are every answer of a DigitalOcean or Vultr setup, whether
// they come from flags and DC_AGENT_* variables (`dc-agent setup
// digitalocean|vultr`) or a wizard screen. Both go the same way:
//
//	token, _ := setup.ReadCloudToken(tokenFile)             // 0600 file
//	a := setup.CloudAnswers{Type: ..., ConfigPath: ..., Token: token}
//	a.FillDefaults(existingConfig)
//	cat, _ := setup.DiscoverCloud(ctx, a)                   // checks the token
//	a.Region = ...                                          // chosen from cat.Regions
//	plan, key, _ := setup.NewCloudPlan(a, cat)
//	plan.Run(ctx, sink)
type CloudAnswers struct {
	Type       string // config.TypeDigitalOcean or config.TypeVultr
	ConfigPath string
	StateDir   string
	KeyPath    string

	APIEndpoint    string
	ProviderPubkey string

	// Token is the cloud API token (ReadCloudToken); it is written to
	// TokenFile (default: "<type>-token" beside the config), which the
	// config names.
	Token     string
	TokenFile string
	// Endpoint is the cloud API ("": the provider's own).
	Endpoint string
	// Region is the default region ("": the config's, else the built-in
	// default).
	Region string

	// Pool is the agent pool of a setup-token registration, written as
	// [api] pool_*; nil keeps the config's.
	Pool *Pool

	// Delegation is the signed delegation (dcds1:...) to register; empty
	// means the plan ends after writing the config.
	Delegation string
	UserAgent  string
	Now        func() time.Time
}

// ReadCloudToken reads an API token from a file that must be private
// (0600) and hold the token only.
func ReadCloudToken(path string) (string, error) {
	tok, err := identity.ReadSecretFile(path)
	if err != nil {
		return "", WithFix(err, "put the token alone in the file and chmod 600 "+path)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", Fixf("the file must hold the API token only, on one line", "%s does not hold a single API token", path)
	}
	return tok, nil
}

// FillDefaults completes the answers from the existing config and the
// built-in defaults.
func (a *CloudAnswers) FillDefaults(existing *config.Config) {
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
		a.TokenFile = filepath.Join(filepath.Dir(a.ConfigPath), a.Type+"-token")
	}
	old := existingSection(existing, a.Type)
	if a.Endpoint == "" && old != nil {
		a.Endpoint = sectionEndpoint(old)
	}
	if a.Region == "" && old != nil {
		a.Region = sectionRegion(old)
	}
	if a.Region == "" {
		a.Region = map[string]string{config.TypeDigitalOcean: config.DefaultDORegion, config.TypeVultr: config.DefaultVultrRegion}[a.Type]
	}
	for _, p := range []*string{&a.KeyPath, &a.TokenFile, &a.StateDir} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
}

func existingSection(cfg *config.Config, typ string) *config.ProvisionerConfig {
	for _, p := range cfg.AllProvisioners() {
		if p.Type == typ {
			return &p
		}
	}
	return nil
}

func sectionEndpoint(p *config.ProvisionerConfig) string {
	switch {
	case p.DigitalOcean != nil:
		return p.DigitalOcean.Endpoint
	case p.Vultr != nil:
		return p.Vultr.Endpoint
	}
	return ""
}

func sectionRegion(p *config.ProvisionerConfig) string {
	switch {
	case p.DigitalOcean != nil:
		return p.DigitalOcean.DefaultRegion
	case p.Vultr != nil:
		return p.Vultr.DefaultRegion
	}
	return ""
}

// cataloger builds the backend for the answers, to ask it what the account offers.
func (a CloudAnswers) cataloger() (provisioners.Cataloger, error) {
	switch a.Type {
	case config.TypeDigitalOcean:
		return digitalocean.New(config.DigitalOceanConfig{Endpoint: a.Endpoint, DefaultRegion: a.Region, ActionTimeoutSeconds: 60}, a.Token, digitalocean.Options{})
	case config.TypeVultr:
		return vultr.New(config.VultrConfig{Endpoint: a.Endpoint, DefaultRegion: a.Region, ActionTimeoutSeconds: 60}, a.Token, vultr.Options{})
	}
	return nil, fmt.Errorf("%q is not a cloud backend setup knows (%s)", a.Type, strings.Join(CloudTypes, ", "))
}

// DiscoverCloud checks the token against the cloud API (a rejected token is
// the error) and lists the account's regions and sizes, sorted.
func DiscoverCloud(ctx context.Context, a CloudAnswers) (provisioners.Catalog, error) {
	c, err := a.cataloger()
	if err != nil {
		return provisioners.Catalog{}, err
	}
	cat, err := c.Catalog(ctx)
	if err != nil {
		return provisioners.Catalog{}, WithFix(err, "check the token (read and write access) and that this host reaches the API")
	}
	sort.Slice(cat.Regions, func(i, j int) bool { return cat.Regions[i].ID < cat.Regions[j].ID })
	sort.SliceStable(cat.Sizes, func(i, j int) bool {
		if cat.Sizes[i].MonthlyPrice != cat.Sizes[j].MonthlyPrice {
			return cat.Sizes[i].MonthlyPrice < cat.Sizes[j].MonthlyPrice
		}
		return cat.Sizes[i].ID < cat.Sizes[j].ID
	})
	return cat, nil
}

// CheckRegion tells whether region is one of the catalog's, naming them if not.
func CheckRegion(cat provisioners.Catalog, region string) error {
	var ids []string
	for _, r := range cat.Regions {
		if r.ID == region {
			return nil
		}
		ids = append(ids, r.ID)
	}
	return Fixf("choose one of "+strings.Join(ids, ", "), "region %q is not available to this account", region)
}

// NewCloudPlan builds the setup plan: the agent key, the token file, the
// config, and (with a delegation) the registration. cat is what
// DiscoverCloud found; the region must be in it.
func NewCloudPlan(a CloudAnswers, cat provisioners.Catalog) (Plan, *KeyStatus, error) {
	if a.ProviderPubkey == "" {
		return Plan{}, nil, errors.New("incomplete answers: set the provider key")
	}
	run, err := NewCloudRun(a, cat)
	if err != nil {
		return Plan{}, nil, err
	}
	if a.Delegation != "" {
		now := a.Now
		if now == nil {
			now = time.Now
		}
		ua := a.UserAgent
		if ua == "" {
			ua = "dc-agent"
		}
		run.Plan.Steps = append(run.Plan.Steps, RegisterStep(a.Delegation, run.Key, a.ProviderPubkey, func(k ed25519.PrivateKey) (*dcapi.Client, error) {
			return dcapi.New(a.APIEndpoint, a.ProviderPubkey, k, dcapi.WithUserAgent(ua))
		}, now))
	}
	return run.Plan, run.Key, nil
}

// CloudRun is a cloud backend's setup plan (key, token file, config) whose
// config step writes Answers as they are when it runs: a registration
// step inserted before it (the setup flow's setup token) completes the
// provider and pool.
type CloudRun struct {
	Plan    Plan
	Key     *KeyStatus
	Answers *CloudAnswers
}

// NewCloudRun builds the plan of NewCloudPlan without the registration.
func NewCloudRun(a CloudAnswers, cat provisioners.Catalog) (*CloudRun, error) {
	if a.ConfigPath == "" || a.APIEndpoint == "" || a.KeyPath == "" || a.TokenFile == "" || a.Token == "" {
		return nil, errors.New("incomplete answers: call FillDefaults and set the config path and token")
	}
	if _, err := a.cataloger(); err != nil {
		return nil, err
	}
	if err := CheckRegion(cat, a.Region); err != nil {
		return nil, err
	}
	run := &CloudRun{Key: &KeyStatus{}, Answers: &a}
	cfg := ConfigStepWith(ConfigAnswers{Path: a.ConfigPath}, nil)
	cfg.Run = func(ctx context.Context, r *Reporter) error {
		a := *run.Answers
		return ConfigStepWith(ConfigAnswers{Path: a.ConfigPath, APIEndpoint: a.APIEndpoint, ProviderPubkey: a.ProviderPubkey,
			AgentKeyPath: a.KeyPath, StateDir: a.StateDir, Pool: a.Pool}, func(cfg *config.Config) string { return applyCloud(cfg, a) }).Run(ctx, r)
	}
	run.Plan = Plan{Steps: []Step{KeyStep(a.KeyPath, run.Key), tokenFileStep(a.TokenFile, a.Token, a.KeyPath), cfg}, Now: a.Now}
	return run, nil
}

// tokenFileStep keeps the token in path (0600, a new file owned like the
// agent key ref: the service account once the service is installed).
func tokenFileStep(path, token, ref string) Step {
	return Step{ID: "token", Title: "API token file", Run: func(ctx context.Context, r *Reporter) error {
		want := []byte(token + "\n")
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, want) {
			if st, err := os.Stat(path); err == nil && st.Mode().Perm() == 0o600 {
				r.Skip("%s holds the token", path)
				return nil
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
		}
		if err := writeOwned(path, want, 0o600, ref); err != nil {
			return WithFix(fmt.Errorf("write %s: %w", path, err), "run setup as a user that may write "+filepath.Dir(path))
		}
		r.Changed("wrote the token to %s (0600)", path)
		return nil
	}}
}

// applyCloud puts the answers into the config's provisioner of their type;
// settings setup does not ask about (size tables, timeouts) are kept. An
// inline token (the earlier agent's api_token) is dropped for the file.
func applyCloud(cfg *config.Config, a CloudAnswers) string {
	target, note := provisionerSlot(cfg, a.Type)
	switch a.Type {
	case config.TypeDigitalOcean:
		if target.DigitalOcean == nil {
			target.DigitalOcean = &config.DigitalOceanConfig{}
		}
		d := target.DigitalOcean
		if d.APIToken != "" {
			note = strings.TrimPrefix(note+"; ", "; ") + "the inline api_token is replaced by api_token_file"
		}
		d.APITokenFile, d.APIToken, d.Endpoint, d.DefaultRegion = a.TokenFile, "", a.Endpoint, a.Region
	case config.TypeVultr:
		if target.Vultr == nil {
			target.Vultr = &config.VultrConfig{}
		}
		v := target.Vultr
		v.APITokenFile, v.Endpoint, v.DefaultRegion = a.TokenFile, a.Endpoint, a.Region
	}
	return note
}
