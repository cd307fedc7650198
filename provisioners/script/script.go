// Package script is the provisioner for custom backends: it runs the
// provider's own executables, one per action, speaking the dc-agent script
// protocol (compatible with the earlier dc-agent):
//
// stdin, one JSON object:
//
//	{"action":"provision"|"terminate"|"health_check"|"get_instance"|"list"|
//	           "reset_password"|"rotate_ssh_key",
//	 "contract_id","offering_id","cpu_cores","memory_mb","storage_gb",
//	 "requester_ssh_pubkey","instance_config","post_provision_script",
//	 "external_id", "instance_name", "want_password", "password"}
//
// stdout, one JSON object:
//
//	{"success":bool,
//	 "instance":{"external_id","ip_address","ipv6_address","ssh_port",
//	             "root_password","additional_details"},
//	 "health":{"status","uptime_seconds","reason"},
//	 "instances":[instance...],
//	 "error":string, "retry_possible":bool}
//
// A non-zero exit status is a failure. The script runs in its own process
// group, which is killed as a whole when the timeout expires; stdout beyond
// max_output_bytes is a failure. Contract data only ever travels on stdin:
// the executable is started directly, never through a shell, with no
// arguments, and with a minimal environment (scriptEnv), never the agent's.
//
// What the tenant sees of a failure is only the script's own JSON "error"
// (or a fixed sentence when it wrote none); stderr, exit details and the
// script's path go to the agent's log only. "instance_name" (dc-<contract id>) and "want_password" are
// additions scripts may ignore; items of "instances" may carry
// "contract_id" or "name" so the agent can reconcile them.
package script

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Type is the registry name.
const Type = config.TypeScript

// Actions.
const (
	ActionProvision   = "provision"
	ActionTerminate   = "terminate"
	ActionHealthCheck = "health_check"
	ActionGetInstance = "get_instance"
	ActionList        = "list"
	ActionPause       = "pause"
	ActionResume      = "resume"
	// Tenant requests (optional scripts): set the login password to
	// "password"; add "requester_ssh_pubkey" (the new key) to the login
	// user's authorized_keys.
	ActionResetPassword = "reset_password"
	ActionRotateSSHKey  = "rotate_ssh_key"
)

// stderrTail is how much of a script's stderr is kept for error messages.
const stderrTail = 2048

// Register adds the script provisioner to r.
func Register(r *provisioners.Registry) { r.Register(Type, New) }

// Provisioner runs scripts.
type Provisioner struct {
	cfg     config.ScriptConfig
	paths   map[string]string
	timeout time.Duration
	maxOut  int
	log     *slog.Logger
}

// New builds a script provisioner from its config section. Every configured
// script must exist and be executable: that is checked here, at start-up,
// rather than when the first paid contract arrives.
func New(pc config.ProvisionerConfig, deps provisioners.Deps) (provisioners.Provisioner, error) {
	if pc.Script == nil {
		return nil, errors.New("[script] section is missing")
	}
	sc := *pc.Script
	p := &Provisioner{
		cfg:     sc,
		paths:   map[string]string{},
		timeout: time.Duration(sc.TimeoutSeconds) * time.Second,
		maxOut:  sc.MaxOutputBytes,
		log:     deps.Logger,
	}
	if p.timeout <= 0 {
		p.timeout = config.DefaultScriptTimeoutSeconds * time.Second
	}
	if p.maxOut <= 0 {
		p.maxOut = 1 << 20
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	resolve := func(s string) string {
		if deps.Config != nil {
			return deps.Config.ResolvePath(s)
		}
		return s
	}
	for action, path := range map[string]string{
		ActionProvision: sc.Provision, ActionTerminate: sc.Terminate, ActionHealthCheck: sc.HealthCheck,
		ActionGetInstance: sc.GetInstance, ActionList: sc.List, ActionPause: sc.Pause, ActionResume: sc.Resume,
		ActionResetPassword: sc.ResetPassword, ActionRotateSSHKey: sc.RotateSSHKey,
	} {
		if path == "" {
			continue
		}
		path = resolve(path)
		if err := checkExecutable(path); err != nil {
			return nil, fmt.Errorf("%s script: %w", action, err)
		}
		p.paths[action] = path
	}
	if (p.paths[ActionPause] == "") != (p.paths[ActionResume] == "") {
		return nil, errors.New("pause and resume scripts go together: set both in the [script] section (or neither: a paused contract's instance then keeps running)")
	}
	for _, required := range []string{ActionProvision, ActionTerminate, ActionHealthCheck} {
		if p.paths[required] == "" {
			return nil, fmt.Errorf("%s script is not configured; set %s in the [script] section", required, required)
		}
	}
	return p, nil
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist; create it or fix the path in the config", path)
		}
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, not a script", path)
	}
	if st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable; run: chmod +x %s", path, path)
	}
	return nil
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{
		Terminate: true,
		Health:    true,
		GetByID:   p.paths[ActionGetInstance] != "",
		List:      p.paths[ActionList] != "",
		Pause:     p.paths[ActionPause] != "",
		// Tenant requests: only with their scripts configured.
		ResetPassword: p.paths[ActionResetPassword] != "",
		RotateSSHKey:  p.paths[ActionRotateSSHKey] != "",
	}
}

// Input is the JSON a script reads on stdin.
type Input struct {
	Action              string         `json:"action"`
	ContractID          *string        `json:"contract_id"`
	OfferingID          *string        `json:"offering_id"`
	CPUCores            *int           `json:"cpu_cores"`
	MemoryMB            *int64         `json:"memory_mb"`
	StorageGB           *int64         `json:"storage_gb"`
	RequesterSSHPubkey  *string        `json:"requester_ssh_pubkey"`
	InstanceConfig      map[string]any `json:"instance_config"`
	PostProvisionScript *string        `json:"post_provision_script"`
	ExternalID          *string        `json:"external_id"`
	InstanceName        *string        `json:"instance_name,omitempty"`
	WantPassword        *bool          `json:"want_password,omitempty"`
	// Password is the new login password of reset_password (stdin only,
	// like everything else; never logged).
	Password *string `json:"password,omitempty"`
}

// Output is the JSON a script writes on stdout.
type Output struct {
	Success       bool              `json:"success"`
	Instance      *OutputInstance   `json:"instance"`
	Health        *OutputHealth     `json:"health"`
	Instances     []*OutputInstance `json:"instances"`
	Error         string            `json:"error"`
	RetryPossible *bool             `json:"retry_possible"`
}

// OutputInstance is an instance as a script describes it.
type OutputInstance struct {
	ExternalID        string          `json:"external_id"`
	ContractID        string          `json:"contract_id,omitempty"`
	Name              string          `json:"name,omitempty"`
	IPAddress         string          `json:"ip_address"`
	IPv6Address       string          `json:"ipv6_address"`
	SSHPort           int             `json:"ssh_port"`
	RootPassword      string          `json:"root_password"`
	AdditionalDetails json.RawMessage `json:"additional_details"`
	Status            string          `json:"status,omitempty"`
}

// OutputHealth is a health observation as a script describes it.
type OutputHealth struct {
	Status        string `json:"status"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	Reason        string `json:"reason"`
	LatencyMs     *int   `json:"latency_ms,omitempty"`
}

// ParseOutput decodes a script's stdout. Exactly one JSON object (with
// surrounding whitespace) is accepted; anything else is an error that quotes
// the start of the output so the provider can see what their script printed.
func ParseOutput(stdout []byte) (Output, error) {
	var out Output
	trimmed := bytes.TrimSpace(stdout)
	if len(trimmed) == 0 {
		return out, errors.New("script printed nothing on stdout; it must print one JSON object like {\"success\":true,...}")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&out); err != nil {
		return out, fmt.Errorf("script output is not a JSON object (%v): %s", err, quote(trimmed))
	}
	if dec.More() {
		return out, fmt.Errorf("script printed more than one JSON value; print exactly one object (send logs to stderr): %s", quote(trimmed))
	}
	if trimmed[0] != '{' {
		return out, fmt.Errorf("script output must be a JSON object: %s", quote(trimmed))
	}
	if out.Health != nil {
		switch out.Health.Status {
		case provisioners.Healthy, provisioners.Unhealthy, provisioners.Unknown:
		default:
			return out, fmt.Errorf("script health status %q is not one of healthy, unhealthy, unknown", out.Health.Status)
		}
		if out.Health.UptimeSeconds < 0 {
			return out, fmt.Errorf("script health uptime_seconds %d is negative", out.Health.UptimeSeconds)
		}
	}
	for _, inst := range append([]*OutputInstance{out.Instance}, out.Instances...) {
		if inst == nil {
			continue
		}
		if inst.SSHPort < 0 || inst.SSHPort > 65535 {
			return out, fmt.Errorf("script instance ssh_port %d is not a port", inst.SSHPort)
		}
		if len(inst.AdditionalDetails) > 0 && !json.Valid(inst.AdditionalDetails) {
			return out, errors.New("script instance additional_details is not valid JSON")
		}
	}
	return out, nil
}

func quote(b []byte) string {
	const max = 200
	s := string(b)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// RunError is a script that failed: it exited non-zero, timed out, printed
// too much or reported success:false. run returns it inside a
// provisioners.Error carrying the retry verdict and the tenant's message.
type RunError struct {
	Action   string
	Path     string
	ExitCode int // -1 if it did not exit normally
	Message  string
	Stderr   string // tail of stderr, for the log only
}

func (e *RunError) Error() string {
	return fmt.Sprintf("%s script %s: %s", e.Action, e.Path, e.Message)
}

// tenantText is a failure of the action's script as the tenant may read it.
func tenantText(action, what string) string {
	name := map[string]string{ActionProvision: "provisioning", ActionHealthCheck: "health check", ActionGetInstance: "instance lookup",
		ActionResetPassword: "password reset", ActionRotateSSHKey: "SSH key rotation"}[action]
	if name == "" {
		name = action
	}
	return "the provider's " + name + " script " + what
}

// run executes the action's script with in on stdin.
func (p *Provisioner) run(ctx context.Context, action string, in Input) (Output, error) {
	path := p.paths[action]
	if path == "" {
		return Output{}, fmt.Errorf("no %s script configured", action)
	}
	in.Action = action
	stdin, err := json.Marshal(in)
	if err != nil {
		return Output{}, fmt.Errorf("encode %s input: %w", action, err)
	}
	runCtx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, path)
	cmd.Stdin = bytes.NewReader(stdin)
	// An overflowing stdout cancels the run, which kills the process group.
	stdout := &limitedBuffer{max: p.maxOut, onOverflow: cancel}
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = scriptEnv(os.Environ())
	// Own process group, so a timeout kills everything the script started
	// (a backgrounded `sleep`, a half-done `virsh` call), not just its shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Grandchildren holding stdout open must not keep us waiting forever.
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	runErr := cmd.Run()
	if runCtx.Err() != nil && cmd.Process != nil {
		// The leader may have exited before the kill; its group must not outlive the run.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	p.log.Debug("script finished", "action", action, "path", path, "duration", time.Since(start), "err", runErr)

	// fail builds the error of a failed run: the log's message (with the
	// path, and stderr's last line where it explains) and, separately,
	// the tenant's: the script's own JSON "error", else a fixed sentence.
	fail := func(code int, retry bool, tenant, format string, args ...any) (Output, error) {
		re := &RunError{Action: action, Path: path, ExitCode: code, Message: fmt.Sprintf(format, args...), Stderr: stderr.String()}
		return Output{}, &provisioners.Error{Err: re, RetryPossible: retry, Tenant: tenant}
	}
	switch {
	case stdout.overflow:
		return fail(-1, false, tenantText(action, "failed"), "printed more than %d bytes on stdout; print one JSON object and send logs to stderr", p.maxOut)
	case ctx.Err() != nil:
		// The agent is stopping (or gave up on this work): not the script's fault.
		return Output{}, provisioners.ForTenant(fmt.Errorf("%s script %s: %w", action, path, context.Cause(ctx)), tenantText(action, "was interrupted"))
	case errors.Is(runCtx.Err(), context.DeadlineExceeded):
		return fail(-1, true, tenantText(action, "timed out"), "timed out after %s and was killed with its process group; raise timeout_seconds if it needs longer", p.timeout)
	}
	exitCode := 0
	if runErr != nil {
		var ee *exec.ExitError
		if !errors.As(runErr, &ee) {
			return fail(-1, true, tenantText(action, "could not be started"), "could not run: %v", runErr)
		}
		exitCode = ee.ExitCode()
	}
	out, perr := ParseOutput(stdout.Bytes())
	if exitCode != 0 {
		msg := fmt.Sprintf("exited with status %d", exitCode)
		tenant := tenantText(action, fmt.Sprintf("failed (exit status %d)", exitCode))
		retry := true
		if perr == nil {
			if out.Error != "" {
				msg += ": " + out.Error
				tenant = out.Error
			}
			if out.RetryPossible != nil {
				retry = *out.RetryPossible
			}
		} else if t := lastLine(stderr.String()); t != "" {
			msg += ": " + t
		}
		return fail(exitCode, retry, tenant, "%s", msg)
	}
	if perr != nil {
		return fail(0, true, tenantText(action, "gave an answer the agent cannot read"), "%v", perr)
	}
	if !out.Success {
		msg := out.Error
		tenant := out.Error
		if msg == "" {
			msg = "reported success:false without an error message"
			tenant = tenantText(action, "failed without saying why")
		}
		retry := true
		if out.RetryPossible != nil {
			retry = *out.RetryPossible
		}
		return fail(0, retry, tenant, "%s", msg)
	}
	return out, nil
}

// scriptEnv is the environment of a script: what it needs to find programs
// and read text — PATH (a standard one if the agent has none), HOME, USER,
// LOGNAME, LANG, LANGUAGE, LC_*, TZ, TMPDIR — and the proxy settings
// (http_proxy, https_proxy, no_proxy, either case), taken from the agent's
// environment. Nothing else of the agent's environment reaches the script
// (tokens, DC_AGENT_* settings, systemd's NOTIFY_SOCKET): a script that
// needs a credential reads it from a file of its own.
func scriptEnv(env []string) []string {
	out := make([]string, 0, 12)
	hasPath := false
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !scriptEnvNames[k] && !strings.HasPrefix(k, "LC_") {
			continue
		}
		hasPath = hasPath || k == "PATH"
		out = append(out, kv)
	}
	if !hasPath {
		out = append(out, "PATH="+defaultPath)
	}
	return out
}

var scriptEnvNames = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LANGUAGE": true, "TZ": true, "TMPDIR": true,
	"http_proxy": true, "https_proxy": true, "no_proxy": true, "HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true,
}

// defaultPath is a script's PATH when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Provision implements provisioners.Provisioner. The script must be
// idempotent by contract id (instance_name is deterministic): the agent may
// call it again for the same contract after a crash.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	name := provisioners.InstanceName(req.ContractID)
	want := req.WantPassword
	in := Input{
		ContractID:          strp(req.ContractID),
		OfferingID:          strp(req.OfferingID),
		RequesterSSHPubkey:  strp(req.RequesterSSHPubkey),
		PostProvisionScript: strp(req.PostProvisionScript),
		InstanceName:        &name,
		WantPassword:        &want,
	}
	if req.CPUCores > 0 {
		in.CPUCores = &req.CPUCores
	}
	if req.MemoryMB > 0 {
		in.MemoryMB = &req.MemoryMB
	}
	if req.StorageGB > 0 {
		in.StorageGB = &req.StorageGB
	}
	if len(req.Config) > 0 {
		in.InstanceConfig = req.Config
	}
	req.Step("running provision script")
	out, err := p.run(ctx, ActionProvision, in)
	if err != nil {
		if p.logStderr(err) {
			p.log.Warn("provision script failed", "contract", req.ContractID, "err", err)
		}
		return provisioners.Instance{}, err
	}
	if out.Instance == nil {
		return provisioners.Instance{}, provisioners.ForTenant(fmt.Errorf("provision script %s reported success but no \"instance\" object", p.paths[ActionProvision]), tenantText(ActionProvision, "returned no instance"))
	}
	if out.Instance.ExternalID == "" {
		return provisioners.Instance{}, provisioners.ForTenant(fmt.Errorf("provision script %s returned an instance without external_id", p.paths[ActionProvision]), tenantText(ActionProvision, "returned an incomplete instance"))
	}
	inst := toInstance(out.Instance)
	inst.ContractID = req.ContractID
	if inst.Name == "" {
		inst.Name = name
	}
	return inst, nil
}

// logStderr logs the stderr tail of a failed script at debug level (it may
// hold anything the provider's script prints, so never at info) and reports
// whether err was a script failure.
func (p *Provisioner) logStderr(err error) bool {
	var re *RunError
	if !errors.As(err, &re) {
		return false
	}
	if re.Stderr != "" {
		p.log.Debug("script stderr", "action", re.Action, "path", re.Path, "stderr", re.Stderr)
	}
	return true
}

func toInstance(o *OutputInstance) provisioners.Instance {
	inst := provisioners.Instance{
		ExternalID:   o.ExternalID,
		ContractID:   o.ContractID,
		Name:         o.Name,
		IPAddress:    o.IPAddress,
		IPv6Address:  o.IPv6Address,
		SSHPort:      o.SSHPort,
		RootPassword: o.RootPassword,
		Status:       o.Status,
	}
	if inst.ContractID == "" && inst.Name != "" {
		inst.ContractID = provisioners.ContractIDFromName(inst.Name)
	}
	if len(o.AdditionalDetails) > 0 && string(o.AdditionalDetails) != "null" {
		var m map[string]any
		if json.Unmarshal(o.AdditionalDetails, &m) == nil {
			inst.AdditionalDetails = m
		} else {
			inst.AdditionalDetails = map[string]any{"value": json.RawMessage(o.AdditionalDetails)}
		}
	}
	return inst
}

// Terminate implements provisioners.Provisioner.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	_, err := p.run(ctx, ActionTerminate, Input{ExternalID: &externalID})
	if err != nil {
		p.logStderr(err)
	}
	return err
}

// HealthCheck implements provisioners.Provisioner.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	out, err := p.run(ctx, ActionHealthCheck, Input{ExternalID: &externalID})
	if err != nil {
		p.logStderr(err)
		return provisioners.Health{}, err
	}
	if out.Health == nil {
		return provisioners.Health{}, provisioners.ForTenant(fmt.Errorf("health_check script %s reported success but no \"health\" object", p.paths[ActionHealthCheck]), tenantText(ActionHealthCheck, "returned no health"))
	}
	return provisioners.Health{
		Status:        out.Health.Status,
		UptimeSeconds: out.Health.UptimeSeconds,
		Reason:        out.Health.Reason,
		LatencyMs:     out.Health.LatencyMs,
	}, nil
}

// GetInstance implements provisioners.Provisioner.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	if p.paths[ActionGetInstance] == "" {
		return nil, errors.New("script provisioner: get_instance script not configured")
	}
	name := provisioners.InstanceName(contractID)
	out, err := p.run(ctx, ActionGetInstance, Input{ContractID: &contractID, InstanceName: &name})
	if err != nil {
		p.logStderr(err)
		return nil, err
	}
	if out.Instance == nil || out.Instance.ExternalID == "" {
		return nil, nil
	}
	inst := toInstance(out.Instance)
	inst.ContractID = contractID
	inst.RootPassword = "" // a lookup never re-reports a password
	return &inst, nil
}

// List implements provisioners.Provisioner.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	if p.paths[ActionList] == "" {
		return nil, errors.New("script provisioner: list script not configured")
	}
	out, err := p.run(ctx, ActionList, Input{})
	if err != nil {
		p.logStderr(err)
		return nil, err
	}
	res := make([]provisioners.Instance, 0, len(out.Instances))
	for _, o := range out.Instances {
		if o == nil || o.ExternalID == "" {
			continue
		}
		inst := toInstance(o)
		inst.RootPassword = ""
		res = append(res, inst)
	}
	return res, nil
}

// limitedBuffer keeps at most max bytes and records an overflow.
type limitedBuffer struct {
	buf        bytes.Buffer
	max        int
	overflow   bool
	onOverflow func()
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.overflow {
		return 0, io.ErrShortWrite
	}
	if b.buf.Len()+len(p) > b.max {
		b.overflow = true
		if b.onOverflow != nil {
			b.onOverflow()
		}
		return 0, io.ErrShortWrite
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string { return string(b.buf) }

// ResetPassword implements provisioners.PasswordResetter with the
// reset_password script (Features says whether one is configured): it gets
// the new password on stdin and answers {"success":true} once the login
// user has it. Setting the same password twice must be harmless.
func (p *Provisioner) ResetPassword(ctx context.Context, contractID, externalID, password string) (string, error) {
	if p.paths[ActionResetPassword] == "" {
		return "", provisioners.NotSupported(Type, "a password reset")
	}
	if _, err := p.run(ctx, ActionResetPassword, p.tenantInput(contractID, externalID, Input{Password: &password})); err != nil {
		err = hidePassword(err, password)
		p.logStderr(err)
		return "", err
	}
	return password, nil
}

// hidePassword takes the password out of a failed reset_password run's
// error, its stderr and the tenant's message: a script that echoes its
// input must not put the password in the agent's log or a health check.
func hidePassword(err error, password string) error {
	hide := func(s string) string { return strings.ReplaceAll(s, password, "[the new password]") }
	var re *RunError
	if errors.As(err, &re) {
		re.Message, re.Stderr = hide(re.Message), hide(re.Stderr)
	}
	var pe *provisioners.Error
	if errors.As(err, &pe) {
		pe.Tenant = hide(pe.Tenant)
	}
	if strings.Contains(err.Error(), password) {
		return &provisioners.Error{Err: fmt.Errorf("%s script failed (its message held the password and was dropped)", ActionResetPassword),
			Tenant: tenantText(ActionResetPassword, "failed"), RetryPossible: provisioners.RetryPossible(err)}
	}
	return err
}

// RotateSSHKey implements provisioners.KeyRotator with the rotate_ssh_key
// script: "requester_ssh_pubkey" is the new key, which it adds to the
// login user's authorized_keys (once, keeping the file's owner and mode).
func (p *Provisioner) RotateSSHKey(ctx context.Context, contractID, externalID, pubkey string) error {
	if p.paths[ActionRotateSSHKey] == "" {
		return provisioners.NotSupported(Type, "an SSH key rotation")
	}
	if _, err := p.run(ctx, ActionRotateSSHKey, p.tenantInput(contractID, externalID, Input{RequesterSSHPubkey: &pubkey})); err != nil {
		p.logStderr(err)
		return err
	}
	return nil
}

// tenantInput names the instance of a tenant request in in.
func (p *Provisioner) tenantInput(contractID, externalID string, in Input) Input {
	name := provisioners.InstanceName(contractID)
	in.ContractID, in.ExternalID, in.InstanceName = &contractID, &externalID, &name
	return in
}
