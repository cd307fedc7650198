// Package doctor checks a dc-agent installation piece by piece — config,
// agent key, delegation, the provisioner's backend, the Decent Cloud API,
// the clock — and says for every problem what is wrong and the one line
// that fixes it. `dc-agent doctor` prints the findings; the TUI monitor
// shows them.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

// Status of a finding.
type Status string

// Statuses, from best to worst.
const (
	OK   Status = "ok"
	Skip Status = "skip" // not checked (not applicable, or an earlier failure)
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is the result of one check.
type Finding struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Report is every finding of a run.
type Report struct {
	Findings []Finding `json:"findings"`
}

// ExitCode is 0 when everything passed, 1 with warnings, 2 with failures.
func (r Report) ExitCode() int {
	code := 0
	for _, f := range r.Findings {
		switch f.Status {
		case Fail:
			return 2
		case Warn:
			code = 1
		}
	}
	return code
}

// Count returns how many findings have status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == s {
			n++
		}
	}
	return n
}

// Find returns the first finding of a check.
func (r Report) Find(check string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.Check == check {
			return f, true
		}
	}
	return Finding{}, false
}

// ProxmoxChecker checks one Proxmox provisioner's backend through its API
// (reachability with the pinned certificate, token, privileges, templates,
// storage). The default talks to the node with go-proxmox.
type ProxmoxChecker func(ctx context.Context, cfg *config.Config, px *config.ProxmoxConfig) []Finding

// Options shape a doctor run.
type Options struct {
	ConfigPath string
	// VerifyAPI sends a signed read-only request to the Decent Cloud API.
	VerifyAPI bool
	// Now is the local clock (tests skew it); nil: time.Now.
	Now func() time.Time
	// HTTPClient for the Decent Cloud API (nil: default).
	HTTPClient *http.Client
	// Proxmox checks Proxmox provisioners (nil: CheckProxmox).
	Proxmox ProxmoxChecker
	// Timeout bounds each network check (default 15s).
	Timeout time.Duration
}

// Clock skew limits against the API's Date header.
const (
	SkewWarn = time.Minute
	SkewFail = 5 * time.Minute
)

// ExpiryWarn is how close to its expiry a delegation starts to warn.
const ExpiryWarn = 7 * 24 * time.Hour

// Run performs every check.
func Run(ctx context.Context, o Options) Report {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Proxmox == nil {
		o.Proxmox = CheckProxmox
	}
	var r Report
	add := func(f ...Finding) { r.Findings = append(r.Findings, f...) }

	cfg, fs := checkConfig(o.ConfigPath)
	add(fs...)
	if cfg == nil {
		return r
	}
	key, f := checkKey(cfg)
	add(f)
	sd, fs := checkDelegation(cfg, key, o.Now())
	add(fs...)
	for _, p := range cfg.AllProvisioners() {
		if p.Type == config.TypeProxmox && p.Proxmox != nil {
			cctx, cancel := context.WithTimeout(ctx, 4*o.Timeout)
			add(o.Proxmox(cctx, cfg, p.Proxmox)...)
			cancel()
		}
	}
	if cfg.Gateway != nil {
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		host, err := gateway.LocalHost(cctx)
		add(checkGateway(cctx, cfg, host, err)...)
		cancel()
	}
	if o.VerifyAPI {
		if key == nil {
			add(Finding{Check: "api", Status: Skip, Message: "not checked: no usable agent key", Fix: "fix the agent key first"})
		} else {
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			add(checkAPI(cctx, o, cfg, key, sd)...)
			cancel()
		}
	}
	return r
}

// checkConfig loads the config: one finding per problem.
func checkConfig(path string) (*config.Config, []Finding) {
	cfg, err := config.Load(path)
	if err != nil {
		var le *config.LoadError
		if errors.As(err, &le) {
			var out []Finding
			for _, p := range le.Problems {
				msg, fix := splitFix(p)
				out = append(out, Finding{Check: "config", Status: Fail, Message: msg, Fix: orDefault(fix, "edit "+path)})
			}
			return nil, out
		}
		fix := "create it with: dc-agent setup proxmox"
		if _, statErr := os.Stat(path); statErr == nil {
			fix = "make it readable by this user (run doctor as the service user or root)"
		}
		return nil, []Finding{{Check: "config", Status: Fail, Message: err.Error(), Fix: fix}}
	}
	out := []Finding{{Check: "config", Status: OK, Message: path + " is valid"}}
	// The service reads its config through its group (root:dc-agent 0640);
	// others must not read it, and nobody but its owner may change it
	// (a root upgrade job reads it). Inline secrets are refused by Load.
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o026 != 0 {
		out = append(out, Finding{Check: "config", Status: Warn, Message: fmt.Sprintf("%s has mode %04o; other users may read it or change the agent's settings", path, st.Mode().Perm()), Fix: "chmod 640 " + path + " (sudo dc-agent service install sets root:dc-agent 0640)"})
	}
	for _, w := range cfg.Warnings {
		msg, fix := splitFix(w)
		out = append(out, Finding{Check: "config", Status: Warn, Message: msg, Fix: fix})
	}
	return cfg, out
}

// splitFix splits a config message "what is wrong; what to do".
func splitFix(s string) (string, string) {
	if i := strings.Index(s, "; "); i > 0 {
		return s[:i], s[i+2:]
	}
	return s, ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func checkKey(cfg *config.Config) ([]byte, Finding) {
	path := cfg.AgentKeyPath()
	key, err := cfg.LoadAgentKey()
	switch {
	case err == nil && path == "":
		return key, Finding{Check: "agent-key", Status: Warn, Message: "the agent key is inline in the config", Fix: "run dc-agent init and set api.agent_secret_key to the key file's path"}
	case err == nil:
		return key, Finding{Check: "agent-key", Status: OK, Message: fmt.Sprintf("%s (mode 0600), public key %s", path, identity.PublicHex(key))}
	case errors.Is(err, identity.ErrKeyPermissions):
		return nil, Finding{Check: "agent-key", Status: Fail, Message: fmt.Sprintf("%s is readable by other users", path), Fix: "chmod 600 " + path}
	case errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "does not exist"):
		return nil, Finding{Check: "agent-key", Status: Fail, Message: fmt.Sprintf("agent key %s does not exist", path), Fix: "register a new key with a setup token from the Decent Cloud dashboard: dc-agent register --setup-token file:PATH (it creates the key)"}
	default:
		return nil, Finding{Check: "agent-key", Status: Fail, Message: err.Error(), Fix: "restore the key file, or move it away and register a new key: dc-agent register --setup-token file:PATH"}
	}
}

// checkDelegation looks at the signed delegation kept beside the key.
func checkDelegation(cfg *config.Config, key []byte, now time.Time) (*identity.SignedDelegation, []Finding) {
	const check = "delegation"
	keyPath := cfg.AgentKeyPath()
	if keyPath == "" {
		return nil, []Finding{{Check: check, Status: Skip, Message: "not checked: the agent key is inline, so there is no delegation file beside it"}}
	}
	path := identity.DelegationPath(keyPath)
	sd, err := setup.LoadDelegation(path)
	if err != nil {
		return nil, []Finding{{Check: check, Status: Fail, Message: err.Error(), Fix: orDefault(setup.FixOf(err), "dc-agent register --delegation file:PATH")}}
	}
	var out []Finding
	redo := "dc-agent delegation request, sign it offline, then dc-agent register --delegation file:PATH"
	if key != nil && sd.AgentPubkey != identity.PublicHex(key) {
		out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("the delegation in %s is for agent key %s, not this host's key %s", path, sd.AgentPubkey, identity.PublicHex(key)), Fix: redo})
		return &sd, out
	}
	if sd.ProviderPubkey != cfg.API.ProviderPubkey {
		out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("the delegation was signed by provider %s, but api.provider_pubkey is %s", sd.ProviderPubkey, cfg.API.ProviderPubkey), Fix: "correct api.provider_pubkey or " + redo})
		return &sd, out
	}
	switch {
	case sd.Expired(now):
		out = append(out, Finding{Check: check, Status: Fail, Message: fmt.Sprintf("the delegation expired at %s: the API refuses every request", sd.ExpiresAt().UTC().Format(time.RFC3339)), Fix: redo})
		return &sd, out
	case sd.ExpiresAtNs != nil && sd.ExpiresAt().Sub(now) < ExpiryWarn:
		out = append(out, Finding{Check: check, Status: Warn, Message: fmt.Sprintf("the delegation expires in %s, at %s", sd.ExpiresAt().Sub(now).Round(time.Minute), sd.ExpiresAt().UTC().Format(time.RFC3339)), Fix: redo})
	}
	var missing []string
	for _, p := range identity.AllPermissions {
		if !sd.Has(p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		st := Warn
		if !sd.Has(identity.PermFetchContracts) || !sd.Has(identity.PermHeartbeat) {
			st = Fail // the agent could neither see work nor show as online
		}
		out = append(out, Finding{Check: check, Status: st, Message: "the delegation lacks " + strings.Join(missing, ", "),
			Fix: "dc-agent delegation request --permissions " + strings.Join(identity.AllPermissions, ",") + ", sign it offline, then dc-agent register"})
	}
	if len(out) == 0 || out[0].Status != Fail {
		exp := "never expires"
		if sd.ExpiresAtNs != nil {
			exp = "expires " + sd.ExpiresAt().UTC().Format(time.RFC3339)
		}
		out = append([]Finding{{Check: check, Status: OK, Message: fmt.Sprintf("signed by provider %s, %s, permissions %s", short(sd.ProviderPubkey), exp, strings.Join(sd.Permissions, ","))}}, out...)
	}
	return &sd, out
}

func short(hex string) string {
	if len(hex) > 16 {
		return hex[:8] + "…" + hex[len(hex)-8:]
	}
	return hex
}

// checkAPI sends one signed, read-only request (no heartbeat: doctor must
// not change what the dashboard shows) and compares clocks.
func checkAPI(ctx context.Context, o Options, cfg *config.Config, key []byte, sd *identity.SignedDelegation) []Finding {
	opts := []dcapi.Option{dcapi.WithClock(o.Now), dcapi.WithUserAgent("dc-agent-doctor")}
	if o.HTTPClient != nil {
		opts = append(opts, dcapi.WithHTTPClient(o.HTTPClient))
	}
	c, err := dcapi.New(cfg.API.Endpoint, cfg.API.ProviderPubkey, key, opts...)
	if err != nil {
		return []Finding{{Check: "api", Status: Fail, Message: err.Error(), Fix: "correct api.endpoint / api.provider_pubkey in " + cfg.Path}}
	}
	var out []Finding
	sent := o.Now()
	var active []dcapi.ActiveContract
	resp, err := c.Do(ctx, http.MethodGet, "/providers/"+c.Provider()+"/contracts/active", nil, nil, &active, o.Timeout)
	recv := o.Now()

	// The clock first: a skewed clock explains a refused signature.
	skewBad := false
	if resp != nil {
		if d, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			local := sent.Add(recv.Sub(sent) / 2)
			skew := local.Sub(d)
			abs := skew
			if abs < 0 {
				abs = -abs
			}
			dir := "ahead of"
			if skew < 0 {
				dir = "behind"
			}
			msg := fmt.Sprintf("this host's clock is %s %s the API's", abs.Round(time.Second), dir)
			fix := "enable time sync: timedatectl set-ntp true (or install chrony)"
			switch {
			case abs > SkewFail:
				skewBad = true
				out = append(out, Finding{Check: "clock", Status: Fail, Message: msg + "; signed requests are refused beyond 5 minutes", Fix: fix})
			case abs > SkewWarn:
				out = append(out, Finding{Check: "clock", Status: Warn, Message: msg + "; requests fail beyond 5 minutes", Fix: fix})
			default:
				out = append(out, Finding{Check: "clock", Status: OK, Message: fmt.Sprintf("within %s of the API's clock", abs.Round(time.Second)+time.Second)})
			}
		} else {
			out = append(out, Finding{Check: "clock", Status: Skip, Message: "the API sent no Date header; clock skew not checked"})
		}
	}

	switch {
	case err == nil:
		out = append(out, Finding{Check: "api", Status: OK, Message: fmt.Sprintf("%s accepted a signed request from agent key %s (%d active contracts)", c.Endpoint(), short(c.KeyHex()), len(active))})
	case dcapi.IsAuth(err) && dcapi.StatusCode(err) == http.StatusForbidden:
		out = append(out, Finding{Check: "api", Status: Warn, Message: fmt.Sprintf("%s accepted the agent key but refused the request: %v", c.Endpoint(), err), Fix: dcapi.AuthHint(err)})
	case dcapi.IsAuth(err):
		fix := dcapi.AuthHint(err)
		if skewBad {
			fix = "fix the clock first (see above): timedatectl set-ntp true"
		}
		out = append(out, Finding{Check: "api", Status: Fail, Message: fmt.Sprintf("%s refused the agent's signed request: %v", c.Endpoint(), err), Fix: fix})
		return out
	case dcapi.IsNotFound(err):
		out = append(out, Finding{Check: "api", Status: Fail, Message: fmt.Sprintf("%s does not know provider %s: %v", c.Endpoint(), c.Provider(), err), Fix: "check api.endpoint and api.provider_pubkey in " + cfg.Path})
		return out
	default:
		out = append(out, Finding{Check: "api", Status: Fail, Message: fmt.Sprintf("%s is not reachable: %v", c.Endpoint(), err), Fix: "check the network, DNS and api.endpoint in " + cfg.Path})
		return out
	}

	// Does the API hold the delegation we hold? The reference server lets
	// an agent read its own; the live service shows them only to the
	// provider's main key.
	me := c.KeyHex()
	d, found, err := setup.RegisteredDelegation(ctx, c, me)
	switch {
	case err != nil:
		return append(out, Finding{Check: "registration", Status: Skip, Message: "the API does not show delegations to the agent key; its signed request was accepted, so a delegation is active"})
	case !found:
		return append(out, Finding{Check: "registration", Status: Fail, Message: "the API lists no delegation for agent key " + short(me), Fix: "dc-agent register"})
	case !d.Active:
		return append(out, Finding{Check: "registration", Status: Fail, Message: "the API lists this agent's delegation as inactive (revoked or expired)", Fix: "dc-agent delegation request, sign it offline, then dc-agent register"})
	case sd != nil && !setup.SameDelegation(d, *sd):
		return append(out, Finding{Check: "registration", Status: Warn, Message: "the API holds a different delegation for this agent key than " + identity.DelegationPath(cfg.AgentKeyPath()), Fix: "register the local one again: dc-agent register"})
	}
	return append(out, Finding{Check: "registration", Status: OK, Message: "the API holds this agent's delegation, as kept locally"})
}
