package setup

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// The Proxmox setup flow: one order, one set of checks, for every front
// end. A Flow runs
//
//	prerequisites → API → SSH → host key → connect + discover → choices →
//	gateway? → node plan (key, templates, token, config) → registration →
//	gateway (private bridge, chosen) → service
//
// and asks its UI only what it cannot know: `setup proxmox --no-tui`
// answers from flags, the wizard from its screens, the accessible mode from
// line prompts. Every answer is checked here; a refused one is asked again
// with the reason (Question.Err), and a front end that cannot ask again
// (no terminal) returns that reason as its error. The flow knows what is
// already done: a host key already pinned is not asked about, and an agent
// the API already knows is reported as registered instead of being sent
// back to offline signing.

// Phase names a part of the flow whose steps run as one plan.
type Phase string

// Phases, in order.
const (
	PhaseConnect  Phase = "connect"  // log in and discover the node
	PhaseNode     Phase = "node"     // agent key, templates, API token, config
	PhaseRegister Phase = "register" // make the API accept the agent key
	PhaseService  Phase = "service"  // install and start the service
	// PhaseGateway (gateway.go) runs between register and service.
)

// Stage is how far the flow got: what is done when it stops.
type Stage int

// Stages.
const (
	StageNothing    Stage = iota // nothing changed yet
	StagePinned                  // host key pinned, nothing else
	StagePlan                    // the node plan is running or failed
	StageNodeReady               // node set up, config written
	StageRegistered              // the API accepts the agent
	StageInstalled               // service installed
)

// ErrBack is what a UI returns to go back to the previous question.
var ErrBack = errors.New("back")

// UI is a front end of the flow. The flow calls it from one goroutine, one
// call at a time. A question method returns the answer, ErrBack, or an
// error that stops the flow (no terminal to ask on, ctx cancelled).
type UI interface {
	// Prerequisites shows the checks of this machine; recheck asks for them
	// again. A failed check stops the flow unless the UI asks again.
	Prerequisites(ctx context.Context, checks []Check) (recheck bool, err error)
	// API asks where the API is and how the agent registers.
	API(ctx context.Context, q APIQuestion) (APIAnswer, error)
	// SSH asks for the node and how to log in to it.
	SSH(ctx context.Context, q SSHQuestion) (SSHAnswer, error)
	// Password asks for the SSH password when there is no other way to
	// log in. An error sends the flow back to SSH with it as the reason.
	Password(ctx context.Context, user, host string) (string, error)
	// ConfirmHostKey shows a host key seen for the first time.
	ConfirmHostKey(ctx context.Context, q HostKeyQuestion) (bool, error)
	// Choose asks for the storage, bridge and templates (and, where a
	// front end asks it, whether to go ahead: the next step changes the node).
	Choose(ctx context.Context, q ChoiceQuestion) (Choices, error)
	// Delegate shows the delegation request and returns the signed
	// delegation the provider pastes, or "" to register later.
	Delegate(ctx context.Context, q DelegationQuestion) (string, error)
	// Started, Event and Ended frame a plan: its steps, their events as
	// they come, and its end (err nil: it succeeded). Ended returns what
	// next: retry, go on (nil), ErrBack, or an error that stops the flow.
	Started(phase Phase, steps []Step)
	Event(e Event)
	Ended(ctx context.Context, phase Phase, err error) (retry bool, _ error)
}

// RegistrationMethod is how the agent key becomes known to the API.
type RegistrationMethod string

// Registration methods. A setup token from the Decent Cloud dashboard (the
// live API's only way, token.go): the agent registers itself with it. An
// offline-signed delegation: the agent prints a dcdr1: request, the
// provider signs it on the machine with the main key, the agent registers
// the dcds1: answer (servers that still take them, like dc-api).
const (
	MethodSetupToken RegistrationMethod = "setup-token"
	MethodDelegation RegistrationMethod = "delegation"
)

// APIQuestion asks for the API endpoint and the registration method.
type APIQuestion struct {
	// Prefill: from flags, the existing config, the defaults.
	Answer APIAnswer
	// Methods offered, the first is the default.
	Methods []RegistrationMethod
	// Kept is the pool the config already registers this agent in (by
	// setup token): the token may then be left empty.
	Kept *Pool
	Err  error
}

// APIAnswer is where the API is and how the agent registers there.
type APIAnswer struct {
	Endpoint string
	Method   RegistrationMethod // "": the first offered
	// Provider is the provider's public key (MethodDelegation).
	Provider string
	// SetupToken is the one-time token (MethodSetupToken); "" keeps the
	// registration the config holds (APIQuestion.Kept). A secret: front
	// ends never show it once entered, and the flow never logs it.
	SetupToken string
}

// SSHAnswer is the node and how to log in to it.
type SSHAnswer struct {
	Host string
	Port int    // 0: 22
	User string // "": root
	// IdentityFile is an OpenSSH private key ("~/" is the home dir).
	IdentityFile string
	// Password, or PasswordFile holding it (read when connecting).
	Password     string
	PasswordFile string
}

// SSHQuestion asks for the node.
type SSHQuestion struct {
	Answer SSHAnswer // prefill
	Err    error
}

// HostKeyQuestion shows a key the host presents and that is not pinned yet.
type HostKeyQuestion struct {
	Info     HostKeyInfo
	PinsPath string
}

// Choices are what the node gets.
type Choices struct {
	Storage   string
	Bridge    string
	Templates []string
	// Rediscover asks to look at the node again (after the provider
	// changed something on it) instead of answering.
	Rediscover bool
}

// ChoiceQuestion asks for the choices on a discovered node. Choices holds
// the preselection: the prefill, the old config's, the usual default, or
// the only one there is; "" where someone has to choose.
type ChoiceQuestion struct {
	Discovery *Discovery
	Choices   Choices
	Err       error
}

// DelegationQuestion shows the delegation request for the agent key.
type DelegationQuestion struct {
	Request identity.Delegation
	Code    string // dcdr1:...
	// File keeps Code for the provider ("" if it could not be written).
	File string
	// Check validates a pasted signed delegation for this agent and
	// provider (for checking it as it is typed).
	Check func(code string) (identity.SignedDelegation, []string, error)
	Err   error
}

// AnswerError is an answer the flow refuses. Field is the answer's flag
// name (host, storage, provider-pubkey, ...), Value the refused value
// where naming it helps.
type AnswerError struct {
	Field string
	Value string
	Err   error
}

func (e *AnswerError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("%s %q: %v", e.Field, e.Value, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

func (e *AnswerError) Unwrap() error { return e.Err }

func answerErr(field string, err error) error {
	if err == nil {
		return nil
	}
	return &AnswerError{Field: field, Err: err}
}

// FlowOptions are what a front end knows before the flow asks anything:
// the prefill (flags, DC_AGENT_* variables) and what to do at the end.
type FlowOptions struct {
	// Answers: ConfigPath is required; the rest prefills (completed by
	// FillDefaults from the existing config). Storage, Bridge and
	// Templates preselect the choices; Delegation registers a signed
	// delegation without asking.
	Answers ProxmoxAnswers
	// SSH prefills the SSH question.
	SSH SSHAnswer
	// HostKeyFingerprint is the expected host key on first contact: with
	// it, no one is asked.
	HostKeyFingerprint string
	// Node picks the node in a cluster.
	Node string
	// Request shapes the delegation request (Provider comes from the API answer).
	Request DelegationAnswers
	// SetupToken registers the agent with this setup token without asking.
	SetupToken string
	// Service installs the service once the agent is registered (nil: not).
	Service *service.Options
	// Backend is what the agent drives (config.TypeProxmox,
	// TypeDigitalOcean or TypeVultr). "": a BackendUI is asked (unless
	// SSH names a node), any other UI sets up Proxmox.
	Backend string
	// Cloud prefills a cloud backend's answers: Endpoint (the cloud
	// API's URL, "" the real one) and Region.
	Cloud CloudAnswers
	// Gateway answers the gateway question without asking (flags): Use
	// with DCID and PublicIP ("": the node's public address), or !Use to
	// decline silently. nil: a GatewayUI is asked when the bridge is
	// private.
	Gateway *GatewayAnswer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Summary is what the flow established.
type Summary struct {
	Answers   ProxmoxAnswers
	Key       *KeyStatus
	Discovery *Discovery
	// Templates maps image names to template VMIDs.
	Templates map[string]int
	Service   service.Result
	// Cloud is the cloud backend set up (nil: a Proxmox node), its
	// token blanked.
	Cloud *CloudAnswers
}

// Flow is one run of the Proxmox setup.
type Flow struct {
	o   FlowOptions
	ui  UI
	now func() time.Time

	existing *config.Config
	loadErr  error

	// Touched only by the flow's goroutine.
	api APIAnswer
	// planErr is the last plan's error (what Ended was asked about).
	planErr error
	ssh     SSHAnswer
	login   SSHOptions
	host    *Host
	reg     registration
	backend string
	// The cloud backend's token (read from the file the UI named) and
	// what its account offers (nil: not checked yet).
	cloudToken, cloudTokenFile string
	cloudCat                   *provisioners.Catalog

	// mu guards what the front end reads while the flow runs.
	mu      sync.Mutex
	stage   Stage
	ans     ProxmoxAnswers
	disc    *Discovery
	run     *ProxmoxRun
	cloud   *CloudRun
	reqCode string
	reqFile string
	svc     service.Result
	// The gateway question's answer (gwAsked: it was asked).
	gw      GatewayAnswer
	gwAsked bool
}

// NewFlow prepares a flow for ui.
func NewFlow(o FlowOptions, ui UI) *Flow {
	f := &Flow{o: o, ui: ui, now: o.Now, ans: o.Answers}
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

// prepare reads the existing config and completes the prefill from it.
func (f *Flow) prepare() {
	f.existing, _, f.loadErr = LoadForUpdate(f.o.Answers.ConfigPath)
	pre := f.o.Answers
	pre.FillDefaults(f.existing, f.o.SSH.Host)
	pre.Now = f.now
	f.mu.Lock()
	f.ans = pre
	f.mu.Unlock()
	f.api = APIAnswer{Endpoint: pre.APIEndpoint, Provider: pre.ProviderPubkey, SetupToken: f.o.SetupToken, Method: f.defaultMethod()}
	f.ssh = f.o.SSH
	f.backend = cmp.Or(f.o.Backend, config.TypeProxmox)
	if f.ssh.IdentityFile == "" && f.ssh.Password == "" && f.ssh.PasswordFile == "" && os.Getenv("SSH_AUTH_SOCK") == "" {
		if keys := DefaultIdentityFiles(); len(keys) > 0 {
			f.ssh.IdentityFile = keys[0]
		}
	}
}

// defaultMethod is the registration the prefill points at: a setup token
// given, else a delegation given; else the config's own (a pool means a
// setup token, a provider without one a delegation) unless a provider flag
// names another provider; else the setup token, the live API's way.
func (f *Flow) defaultMethod() RegistrationMethod {
	a, old := f.o.Answers, f.existing
	switch {
	case f.o.SetupToken != "":
		return MethodSetupToken
	case a.Delegation != "":
		return MethodDelegation
	case old != nil && old.API.PoolID != "" && (a.ProviderPubkey == "" || a.ProviderPubkey == old.API.ProviderPubkey):
		return MethodSetupToken
	case a.ProviderPubkey != "" || old != nil && old.API.ProviderPubkey != "":
		return MethodDelegation
	}
	return MethodSetupToken
}

// errLater ends the flow before registering: the provider registers later.
var errLater = errors.New("register later")

// Run walks the flow to its end, or until the UI stops it. It returns nil
// also when the provider chose to register later (Stage says how far it got).
func (f *Flow) Run(ctx context.Context) error {
	defer func() {
		if f.host != nil {
			f.host.Close()
		}
	}()
	if f.o.Answers.ConfigPath == "" {
		return errors.New("no config path")
	}
	f.prepare()
	if err := f.checkPrefill(); err != nil {
		return err
	}
	always := func() bool { return true }
	px := func() bool { return f.backend == config.TypeProxmox }
	cloud := func() bool { return !px() }
	stages := []struct {
		run func(context.Context) error
		on  func() bool
	}{{f.prerequisites, always}, {f.askAPI, always}, {f.askBackend, f.AsksBackend},
		{f.connect, px}, {f.choose, px}, {f.askGateway, f.asksGateway}, {f.setUpNode, px}, {f.askCloud, cloud}, {f.setUpCloud, cloud},
		{f.register, always}, {f.setUpGateway, f.wantsGateway}, {f.installService, always}}
	for i := 0; i < len(stages); {
		if !stages[i].on() {
			i++
			continue
		}
		err := stages[i].run(ctx)
		switch {
		case errors.Is(err, ErrBack):
			for i = max(i-1, 0); i > 0 && !stages[i].on(); i-- {
			}
		case errors.Is(err, errLater):
			return nil
		case err != nil:
			return err
		default:
			i++
		}
	}
	return nil
}

// checkPrefill refuses answers that are wrong before anything is asked.
func (f *Flow) checkPrefill() error {
	for _, t := range f.o.Answers.Templates {
		if _, ok := LookupImage(t); !ok {
			return &AnswerError{Field: "templates", Err: fmt.Errorf("unknown template %q; choose from %s", t, strings.Join(ImageNames(), ", "))}
		}
	}
	if fp := f.o.HostKeyFingerprint; fp != "" {
		if _, err := NormalizeSSHFingerprint(fp); err != nil {
			return answerErr("host-key-fingerprint", err)
		}
	}
	if err := checkImageDir(f.ans.ImageDir); err != nil {
		return answerErr("image-dir", err)
	}
	if err := checkVMIDBase(f.ans.VMIDBase); err != nil {
		return answerErr("template-vmid-base", err)
	}
	if f.o.SetupToken != "" {
		if err := CheckSetupToken(f.o.SetupToken); err != nil {
			return answerErr("setup-token", err)
		}
	}
	if g := f.o.Gateway; g != nil && g.Use {
		if err := CheckGatewayDCID(g.DCID); err != nil {
			return answerErr("gateway-dc-id", err)
		}
		if g.PublicIP != "" {
			if err := CheckGatewayPublicIP(g.PublicIP); err != nil {
				return answerErr("gateway-public-ip", err)
			}
		}
	}
	r := f.o.Request
	if _, err := ParseExpiry(r.Expires, f.now()); err != nil {
		return answerErr("expires", err)
	}
	if err := identity.ValidateLabel(r.Label); err != nil {
		return answerErr("label", err)
	}
	if r.Permissions != "" {
		if _, err := identity.ParsePermissions(r.Permissions); err != nil {
			return answerErr("permissions", err)
		}
	}
	return nil
}

func (f *Flow) prerequisites(ctx context.Context) error {
	for {
		checks := Prereqs(PrereqOptions{ConfigPath: f.o.Answers.ConfigPath, Existing: f.existing, LoadErr: f.loadErr, SSH: f.o.SSH, Service: f.o.Service})
		recheck, err := f.ui.Prerequisites(ctx, checks)
		switch {
		case err != nil:
			return err
		case recheck:
			f.prepare()
			continue
		}
		if c, ok := failed(checks); ok {
			return &CheckError{Check: c, Err: f.loadErr}
		}
		return nil
	}
}

// CheckError is a prerequisite that failed; Err is the cause where there
// is one (the config that does not load).
type CheckError struct {
	Check Check
	Err   error
}

func (e *CheckError) Error() string { return e.Check.Text }
func (e *CheckError) Unwrap() error { return e.Err }

// Fix says how to clear the check.
func (e *CheckError) Fix() string { return e.Check.Fix }

func (f *Flow) askAPI(ctx context.Context) error { return f.askAPIWith(ctx, nil) }

// askAPIWith asks for the API with qerr as the reason to ask (nil: the
// first time).
func (f *Flow) askAPIWith(ctx context.Context, qerr error) error {
	for {
		q := APIQuestion{Answer: f.api, Methods: []RegistrationMethod{MethodSetupToken, MethodDelegation}, Err: qerr}
		if kept, ok := KeptRegistration(f.o.Answers.ConfigPath, f.answers().KeyPath, f.api.Endpoint); ok {
			q.Kept = &kept.Pool
		}
		a, err := f.ui.API(ctx, q)
		if err != nil {
			return err
		}
		a.Method = cmp.Or(a.Method, MethodSetupToken)
		f.api = a
		if qerr = f.checkAPI(&a); qerr != nil {
			continue
		}
		f.api = a
		f.reg = newRegistration(a)
		return nil
	}
}

func (f *Flow) checkAPI(a *APIAnswer) error {
	a.Endpoint = strings.TrimSpace(a.Endpoint)
	if err := CheckEndpoint(a.Endpoint); err != nil {
		return answerErr("api-endpoint", err)
	}
	switch a.Method {
	case MethodSetupToken:
		a.SetupToken = strings.TrimSpace(a.SetupToken)
		if a.SetupToken == "" {
			if _, ok := KeptRegistration(f.o.Answers.ConfigPath, f.answers().KeyPath, a.Endpoint); ok {
				return nil
			}
		}
		if err := CheckSetupToken(a.SetupToken); err != nil {
			return answerErr("setup-token", err)
		}
	case MethodDelegation:
		p, err := identity.NormalizePublicKeyHex(a.Provider)
		if err != nil {
			return answerErr("provider-pubkey", err)
		}
		a.Provider = p
	default:
		return &AnswerError{Field: "registration", Value: string(a.Method), Err: errors.New("is not a registration method")}
	}
	return nil
}

// connect asks for the node until the flow is logged in and has looked at it.
func (f *Flow) connect(ctx context.Context) error {
	var qerr error
	for {
		a, err := f.ui.SSH(ctx, SSHQuestion{Answer: f.ssh, Err: qerr})
		if err != nil {
			return err
		}
		a.Host = strings.TrimSpace(a.Host)
		a.Port, a.User = cmp.Or(a.Port, 22), cmp.Or(a.User, "root")
		f.ssh = a
		if qerr = CheckHost(a.Host); qerr != nil {
			qerr = &AnswerError{Field: "host", Value: a.Host, Err: qerr}
			continue
		}
		if qerr = CheckPort(a.Port); qerr != nil {
			qerr = answerErr("port", qerr)
			continue
		}
		f.prepareAnswers()
		if f.login, qerr = f.loginOptions(ctx, a); qerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if qerr = f.checkHostKey(ctx); qerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var stop *stopError
			if errors.As(qerr, &stop) {
				return stop.err
			}
			continue
		}
		if err := f.connectAndDiscover(ctx); !errors.Is(err, ErrBack) {
			return err
		}
		qerr = nil
	}
}

// prepareAnswers rebuilds the answers for the chosen host from the
// prefill: FillDefaults, then the API answer.
func (f *Flow) prepareAnswers() {
	a := f.o.Answers
	a.APIEndpoint, a.ProviderPubkey, a.Now = f.api.Endpoint, f.api.Provider, f.now
	a.FillDefaults(f.existing, f.ssh.Host)
	f.mu.Lock()
	f.ans = a
	f.mu.Unlock()
}

// loginOptions decides how to log in, in the order OpenSSH tries: the key
// file, ssh-agent, then the password (all that are given are offered).
// With none of them, the user's usual key, else a password typed now.
func (f *Flow) loginOptions(ctx context.Context, a SSHAnswer) (SSHOptions, error) {
	ans := f.answers()
	o := SSHOptions{Host: a.Host, Port: a.Port, User: a.User, Pins: HostKeyStore{Path: ans.PinsPath()},
		IdentityFile: ExpandHome(a.IdentityFile), Password: a.Password, UseAgent: os.Getenv("SSH_AUTH_SOCK") != ""}
	if a.PasswordFile != "" {
		pw, err := identity.ReadSecretFile(a.PasswordFile)
		if err != nil {
			return o, &AnswerError{Field: "password-file", Err: WithFix(err, "check the password file (0600), or type the password")}
		}
		o.Password = pw
	}
	if o.IdentityFile != "" || o.Password != "" || o.UseAgent {
		return o, nil
	}
	if keys := DefaultIdentityFiles(); len(keys) > 0 {
		o.IdentityFile = keys[0]
		return o, nil
	}
	pw, err := f.ui.Password(ctx, a.User, a.Host)
	if err != nil {
		return o, err
	}
	if pw == "" {
		return o, Fixf("enter an SSH key file or the password", "no way to log in: no key, no ssh-agent, no password")
	}
	o.Password = pw
	return o, nil
}

// stopError is a refusal no other answer to the same question can change.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// checkHostKey looks at the host's key before logging in: a changed key
// stops, a pinned one is trusted, a new one must match the expected
// fingerprint or be confirmed.
func (f *Flow) checkHostKey(ctx context.Context) error {
	info, err := ScanHostKey(ctx, f.login.Host, f.login.Port, f.login.Pins)
	if err != nil {
		return err
	}
	if info.Changed {
		e := &HostKeyChangedError{Addr: info.Addr, Pinned: info.PinnedFingerprints, Got: info.Fingerprint, Type: info.Type, File: f.login.Pins.Path}
		return WithFix(e, e.Fix())
	}
	f.login.HostKeyFingerprint = f.o.HostKeyFingerprint
	if info.Pinned || f.o.HostKeyFingerprint != "" {
		return nil // Connect checks the key against the pin or the expected one
	}
	ok, err := f.ui.ConfirmHostKey(ctx, HostKeyQuestion{Info: info, PinsPath: f.login.Pins.Path})
	switch {
	case err != nil && !errors.Is(err, ErrBack):
		return &stopError{err}
	case err != nil || !ok:
		return Fixf("compare the fingerprint with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host, then accept it",
			"host key %s of %s was not accepted; nothing was changed", info.Fingerprint, info.Addr)
	}
	f.login.HostKeyFingerprint = info.Fingerprint
	return nil
}

// connectAndDiscover logs in and looks at the node (nothing is changed
// but the host key pin).
func (f *Flow) connectAndDiscover(ctx context.Context) error {
	opts, node := f.login, f.o.Node
	return f.runPlan(ctx, PhaseConnect, func() (*Plan, error) {
		return &Plan{Steps: []Step{
			{ID: "connect", Title: fmt.Sprintf("Connect to %s@%s", opts.User, opts.Host), Run: func(ctx context.Context, r *Reporter) error {
				h, err := Connect(ctx, opts)
				if err != nil {
					return err
				}
				if f.host != nil {
					f.host.Close()
				}
				f.host = h
				f.reach(StagePinned)
				if h.NewlyPinned {
					r.Changed("logged in; pinned host key %s in %s", h.Fingerprint, opts.Pins.Path)
				} else {
					r.Skip("logged in; host key %s", h.Fingerprint)
				}
				return nil
			}},
			{ID: "discover", Title: "Discover the node", Run: func(ctx context.Context, r *Reporter) error {
				d, err := Discover(ctx, f.host, r, node)
				if err != nil {
					return err
				}
				f.mu.Lock()
				f.disc = d
				f.mu.Unlock()
				r.Summarize("node %s, Proxmox VE %s", d.Node, d.Version.Version)
				return nil
			}},
		}}, nil
	})
}

// choose asks for the storage, bridge and templates on the discovered node.
func (f *Flow) choose(ctx context.Context) error {
	pre, qerr := f.preselect()
	for {
		c, err := f.ui.Choose(ctx, ChoiceQuestion{Discovery: f.discovery(), Choices: pre, Err: qerr})
		if err != nil {
			return err
		}
		if c.Rediscover {
			if err := f.connectAndDiscover(ctx); err != nil {
				return err
			}
			pre, qerr = f.preselect()
			continue
		}
		pre = c
		if qerr = CheckChoices(f.discovery(), c); qerr != nil {
			continue
		}
		f.mu.Lock()
		f.ans.Storage, f.ans.Bridge, f.ans.Templates = c.Storage, c.Bridge, c.Templates
		f.mu.Unlock()
		return nil
	}
}

// preselect fills what need not be asked: the prefill if the node has it,
// else the old config's, the usual default, or the only one. A prefill the
// node lacks is the question's error.
func (f *Flow) preselect() (Choices, error) {
	d, a, old := f.discovery(), f.o.Answers, oldProxmox(f.existing)
	switch {
	case len(d.Storages) == 0:
		return Choices{}, Fixf("add one (content: images) on the node, then look again", "node %s has no storage that can hold VM disks", d.Node)
	case len(d.Bridges) == 0:
		return Choices{}, Fixf("create one (e.g. vmbr0) on the node, then look again", "node %s has no network bridge", d.Node)
	}
	c := Choices{Templates: f.answers().Templates}
	c.Storage, _ = d.PreferredStorage(old)
	c.Bridge, _ = d.PreferredBridge(old)
	var serr, berr error
	if a.Storage != "" {
		if c.Storage, serr = a.Storage, storageOnNode(d, a.Storage); serr != nil {
			c.Storage = ""
		}
	}
	if a.Bridge != "" {
		if c.Bridge, berr = a.Bridge, bridgeOnNode(d, a.Bridge); berr != nil {
			c.Bridge = ""
		}
	}
	return c, cmp.Or(serr, berr)
}

// CheckChoices checks the choices against the node.
func CheckChoices(d *Discovery, c Choices) error {
	switch {
	case c.Storage == "":
		return &AnswerError{Field: "storage", Err: fmt.Errorf("required: node %s has several (%s)", d.Node, storageNames(d))}
	case c.Bridge == "":
		return &AnswerError{Field: "bridge", Err: fmt.Errorf("required: node %s has several (%s)", d.Node, bridgeNames(d))}
	case len(c.Templates) == 0:
		return &AnswerError{Field: "templates", Err: Fixf("choose at least one template", "no templates chosen; nothing was changed on the node")}
	}
	if err := cmp.Or(storageOnNode(d, c.Storage), bridgeOnNode(d, c.Bridge)); err != nil {
		return err
	}
	for _, t := range c.Templates {
		if _, ok := LookupImage(t); !ok {
			return &AnswerError{Field: "templates", Value: t, Err: fmt.Errorf("is not one of %s", strings.Join(ImageNames(), ", "))}
		}
	}
	return nil
}

func storageOnNode(d *Discovery, id string) error {
	if _, ok := d.Storage(id); ok {
		return nil
	}
	return &AnswerError{Field: "storage", Value: id, Err: fmt.Errorf("node %s has no such storage for VM disks (it has: %s)", d.Node, storageNames(d))}
}

func bridgeOnNode(d *Discovery, name string) error {
	if _, ok := d.Bridge(name); ok {
		return nil
	}
	return &AnswerError{Field: "bridge", Value: name, Err: fmt.Errorf("node %s has no such bridge (it has: %s)", d.Node, bridgeNames(d))}
}

// setUpNode runs the node plan: agent key, templates, pool, user, role,
// token, ACLs and their check, the config.
//
// A setup token the API refuses (used, expired, unknown) is asked for
// again, with the reason, when the UI goes back from the failed plan.
func (f *Flow) setUpNode(ctx context.Context) error { return f.askTokenAgain(ctx, f.runNodePlan) }

// askTokenAgain runs the backend's plan, asking for another setup token
// while the API refuses the one given.
func (f *Flow) askTokenAgain(ctx context.Context, runPlan func(context.Context) error) error {
	for {
		err := runPlan(ctx)
		var te *TokenError
		if !errors.Is(err, ErrBack) || !errors.As(f.planErr, &te) {
			return err
		}
		f.api.SetupToken = "" // refused: never offered again
		if err := f.askAPIWith(ctx, answerErr("setup-token", te)); err != nil {
			return err
		}
		f.mu.Lock()
		f.ans.APIEndpoint = f.api.Endpoint
		if f.api.Method == MethodDelegation {
			f.ans.ProviderPubkey = f.api.Provider
		}
		f.mu.Unlock()
	}
}

func (f *Flow) runNodePlan(ctx context.Context) error {
	return f.runPlan(ctx, PhaseNode, func() (*Plan, error) {
		ans := f.answers()
		if f.wantsGateway() {
			g, err := f.resolveGateway(ctx)
			if err != nil {
				return nil, err
			}
			ans.Gateway = &g
		}
		run, err := NewProxmoxPlan(ans, f.host, f.discovery())
		if err != nil {
			return nil, err
		}
		a := *run.Answers
		run.Plan.Steps = slices.Insert(run.Plan.Steps, 1, f.reg.keySteps(f, keyTarget{ConfigPath: a.ConfigPath, KeyPath: a.KeyPath,
			Endpoint: a.APIEndpoint, UserAgent: a.UserAgent, Key: run.Key, learned: func(provider string, pool Pool) {
				run.Answers.ProviderPubkey, run.Answers.Pool = provider, pool
			}})...)
		f.mu.Lock()
		f.run = run
		f.mu.Unlock()
		f.reach(StagePlan)
		return &run.Plan, nil
	}, func() { f.reach(StageNodeReady) })
}

// register makes the API accept the agent key, by the chosen method.
func (f *Flow) register(ctx context.Context) error {
	if err := f.reg.register(ctx, f); err != nil {
		return err
	}
	f.reach(StageRegistered)
	return nil
}

// installService installs and starts the service (where the front end
// asked for it).
func (f *Flow) installService(ctx context.Context) error {
	if f.o.Service == nil {
		return nil
	}
	opts := *f.o.Service
	opts.ConfigPath = f.answers().ConfigPath
	title := "Install the dc-agent service"
	if opts.Root != "" {
		title = "Install the dc-agent service files"
	}
	step := Step{ID: "service", Title: title, Run: func(ctx context.Context, r *Reporter) error {
		o := opts
		o.Progress = func(e service.Event) {
			mark := "ok     "
			if e.Changed {
				mark = "changed"
			}
			r.Notef("%s %-17s %s", mark, e.Step, e.Detail)
		}
		got, err := service.Install(ctx, o)
		if err != nil {
			return WithFix(err, "fix what it says, then retry (or later: dc-agent service install)")
		}
		f.mu.Lock()
		f.svc = got
		f.mu.Unlock()
		switch {
		case o.Root != "":
			r.Changed("wrote %s", got.UnitPath)
		case got.Changed:
			r.Changed("%s: active (running)", got.UnitPath)
		default:
			r.Skip("%s: already installed and running", got.UnitPath)
		}
		return nil
	}}
	return f.runPlan(ctx, PhaseService, func() (*Plan, error) { return &Plan{Steps: []Step{step}}, nil },
		func() { f.reach(StageInstalled) })
}

// runPlan runs the plan build makes as phase, shows it to the UI, and asks
// the UI what next when it ends: run it again, go back, stop, or go on
// (then done runs, if given).
func (f *Flow) runPlan(ctx context.Context, phase Phase, build func() (*Plan, error), done ...func()) error {
	for {
		p, err := build()
		if err != nil {
			return err
		}
		p.Now = f.now
		f.ui.Started(phase, p.Steps)
		_, err = p.Run(ctx, func(e Event) {
			e.Phase = phase
			f.ui.Event(e)
		})
		f.planErr = err
		if err == nil {
			for _, d := range done {
				d()
			}
		}
		retry, uerr := f.ui.Ended(ctx, phase, err)
		switch {
		case uerr != nil:
			return uerr
		case retry:
			continue
		}
		return err
	}
}

// Client is the agent's API client for these answers, signing with key.
func (a ProxmoxAnswers) Client(key ed25519.PrivateKey) (*dcapi.Client, error) {
	return dcapi.New(a.APIEndpoint, a.ProviderPubkey, key, dcapi.WithUserAgent(cmp.Or(a.UserAgent, "dc-agent")))
}

func (f *Flow) reach(s Stage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stage = max(f.stage, s)
}

// Stage is how far the flow got.
func (f *Flow) Stage() Stage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stage
}

func (f *Flow) answers() ProxmoxAnswers {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ans
}

func (f *Flow) discovery() *Discovery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disc
}

// Summary is what the flow established so far.
func (f *Flow) Summary() Summary {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Summary{Answers: f.ans, Discovery: f.disc, Service: f.svc}
	if f.run != nil {
		s.Key, s.Templates = f.run.Key, f.run.Result.Templates
	}
	if f.cloud != nil {
		c := *f.cloud.Answers
		c.Token = ""
		s.Key, s.Cloud = f.cloud.Key, &c
	}
	return s
}

// Hint says what was done and what to run to go on: for the end of the
// flow, or wherever it stopped.
func (f *Flow) Hint() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg := f.ans.ConfigPath
	what := "node"
	if name, ok := CloudNames[f.backend]; ok {
		what = name + " backend"
	}
	switch f.stage {
	case StageNothing:
		return "Stopped; nothing was changed. Run dc-agent again to set up."
	case StagePinned:
		return fmt.Sprintf("Stopped; nothing was changed on the node (its SSH host key is pinned in %s). Run dc-agent again to continue.", f.ans.PinsPath())
	case StagePlan:
		var te *TokenError
		if errors.As(f.planErr, &te) {
			return fmt.Sprintf("Stopped: %v.\nNothing is registered; %s, then run dc-agent again with it (--setup-token file:PATH, or DC_AGENT_SETUP_TOKEN).", f.planErr, TokenFix)
		}
		return "Stopped during the " + what + " setup. Every step checks first and changes only what differs, so nothing is left half-done:\n" +
			"run dc-agent again (or dc-agent setup " + f.backend + " with the same answers) to continue where it stopped."
	case StageNodeReady:
		var b strings.Builder
		fmt.Fprintf(&b, "The %s is set up and the config is written (%s), but the agent is not registered yet.\n", what, cfg)
		if f.reqFile != "" {
			fmt.Fprintf(&b, "The delegation request is in %s. Sign it on the machine with your provider key:\n", f.reqFile)
		} else {
			b.WriteString("Sign the delegation request (dc-agent delegation request prints it) on the machine with your provider key:\n")
		}
		fmt.Fprintf(&b, "  %s\n", SignCommand(f.reqCode))
		fmt.Fprintf(&b, "then here: dc-agent --config %s register --delegation 'dcds1:...'\n", cfg)
		fmt.Fprintf(&b, "and: dc-agent --config %s service install", cfg)
		return b.String()
	case StageRegistered:
		return fmt.Sprintf("The agent is registered, but the service is not installed. Finish with: dc-agent --config %s service install", cfg)
	}
	return fmt.Sprintf("dc-agent is set up and its service is installed. Watch it with: dc-agent --config %s   (or: dc-agent status)", cfg) + f.gatewayHint()
}

// SignCommand is what the provider runs on the machine holding the main key.
func SignCommand(code string) string {
	return "dc-agent delegation sign --identity ~/.dcc/identity/<name>/private.pem '" + cmp.Or(code, "dcdr1:...") + "'"
}
