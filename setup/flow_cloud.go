package setup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// The flow's cloud branch: a front end that can set up DigitalOcean or
// Vultr (the wizard and its line prompts) is asked which backend after
// the API; a cloud backend then takes its API token and region (the
// answers of `dc-agent setup digitalocean|vultr`, checked by the same
// DiscoverCloud) and runs NewCloudRun's plan with the registration's
// steps, instead of the SSH, node and choices of Proxmox. Registration and
// the service follow as for a node.

// BackendUI is a front end that offers the cloud backends.
type BackendUI interface {
	// Backend asks which backend the agent drives.
	Backend(ctx context.Context, q BackendQuestion) (string, error)
	// Cloud asks for a cloud backend's API token file and, once the
	// token is accepted (q.Catalog set), the default region.
	Cloud(ctx context.Context, q CloudQuestion) (CloudChoice, error)
}

// Backends the flow offers, the first is the default.
var Backends = []string{config.TypeProxmox, config.TypeDigitalOcean, config.TypeVultr}

// CloudNames are the cloud backends' display names.
var CloudNames = map[string]string{config.TypeDigitalOcean: "DigitalOcean", config.TypeVultr: "Vultr"}

// BackendQuestion asks for the backend.
type BackendQuestion struct {
	Backends []string
	Answer   string // prefill
}

// CloudQuestion asks for a cloud backend's token and region.
type CloudQuestion struct {
	Type   string // config.TypeDigitalOcean or config.TypeVultr
	Answer CloudChoice
	// Catalog is what the account offers once the token was accepted:
	// then the region is asked (from Catalog.Regions).
	Catalog *provisioners.Catalog
	Err     error
}

// CloudChoice is the answer to a CloudQuestion.
type CloudChoice struct {
	// TokenFile holds the API token (0600, ReadCloudToken).
	TokenFile string
	Region    string
}

// AsksBackend reports whether the flow asks for the backend: the UI
// offers the cloud backends and no option chose one.
func (f *Flow) AsksBackend() bool {
	_, ok := f.ui.(BackendUI)
	return ok && f.o.Backend == "" && f.o.SSH.Host == ""
}

func (f *Flow) askBackend(ctx context.Context) error {
	b, err := f.ui.(BackendUI).Backend(ctx, BackendQuestion{Backends: Backends, Answer: f.backend})
	if err != nil {
		return err
	}
	if !slices.Contains(Backends, b) {
		return &AnswerError{Field: "backend", Value: b, Err: fmt.Errorf("is not one of %s", strings.Join(Backends, ", "))}
	}
	if b != f.backend {
		f.cloudCat, f.cloudToken = nil, ""
	}
	f.backend = b
	return nil
}

// cloudAnswers are the flow's answers for the cloud backend.
func (f *Flow) cloudAnswers() CloudAnswers {
	a := f.answers()
	pool := a.Pool
	c := CloudAnswers{Type: f.backend, ConfigPath: a.ConfigPath, StateDir: a.StateDir, KeyPath: a.KeyPath, APIEndpoint: a.APIEndpoint,
		ProviderPubkey: a.ProviderPubkey, Pool: &pool, Token: f.cloudToken, Endpoint: f.o.Cloud.Endpoint, Region: f.o.Cloud.Region,
		TokenFile: f.o.Cloud.TokenFile, UserAgent: a.UserAgent, Now: f.now}
	c.FillDefaults(f.existing)
	return c
}

// askCloud asks for the token until the cloud API accepts it, then for
// the region until it is one the account offers.
func (f *Flow) askCloud(ctx context.Context) error {
	ui := f.ui.(BackendUI)
	f.prepareAnswers()
	a := f.cloudAnswers()
	choice := CloudChoice{TokenFile: f.cloudTokenFile, Region: a.Region}
	var qerr error
	for {
		c, err := ui.Cloud(ctx, CloudQuestion{Type: f.backend, Answer: choice, Catalog: f.cloudCat, Err: qerr})
		switch {
		case errors.Is(err, ErrBack) && f.cloudCat != nil:
			f.cloudCat, qerr = nil, nil // back to the token
			continue
		case err != nil:
			return err
		}
		c.Region = cmp.Or(c.Region, choice.Region) // the token answer leaves the default
		choice, qerr = c, nil
		if f.cloudCat == nil {
			tok, err := ReadCloudToken(strings.TrimSpace(c.TokenFile))
			if err != nil {
				qerr = answerErr("token-file", err)
				continue
			}
			a.Token = tok
			cat, err := DiscoverCloud(ctx, a)
			if err != nil {
				qerr = answerErr("token-file", err)
				continue
			}
			f.cloudToken, f.cloudTokenFile, f.cloudCat = tok, strings.TrimSpace(c.TokenFile), &cat
			continue
		}
		if err := CheckRegion(*f.cloudCat, c.Region); err != nil {
			qerr = answerErr("region", err)
			continue
		}
		f.o.Cloud.Region = c.Region
		return nil
	}
}

// setUpCloud runs the cloud backend's plan: the agent key, the
// registration's steps (a setup token), the token file, the config.
func (f *Flow) setUpCloud(ctx context.Context) error {
	return f.askTokenAgain(ctx, func(ctx context.Context) error {
		return f.runPlan(ctx, PhaseNode, func() (*Plan, error) {
			run, err := NewCloudRun(f.cloudAnswers(), *f.cloudCat)
			if err != nil {
				return nil, err
			}
			a := *run.Answers
			run.Plan.Steps = slices.Insert(run.Plan.Steps, 1, f.reg.keySteps(f, keyTarget{ConfigPath: a.ConfigPath, KeyPath: a.KeyPath,
				Endpoint: a.APIEndpoint, UserAgent: a.UserAgent, Key: run.Key, learned: func(provider string, pool Pool) {
					run.Answers.ProviderPubkey, run.Answers.Pool = provider, &pool
				}})...)
			f.mu.Lock()
			f.cloud = run
			f.mu.Unlock()
			f.reach(StagePlan)
			return &run.Plan, nil
		}, func() { f.reach(StageNodeReady) })
	})
}
