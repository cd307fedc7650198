package script

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

const cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// writeScript writes an executable sh script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newProv(t *testing.T, sc config.ScriptConfig) *Provisioner {
	t.Helper()
	if sc.TimeoutSeconds == 0 {
		sc.TimeoutSeconds = 30
	}
	p, err := New(config.ProvisionerConfig{Type: Type, Script: &sc}, provisioners.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Provisioner)
}

// allScripts configures every action to the same script body.
func allScripts(t *testing.T, body string) (config.ScriptConfig, string) {
	dir := t.TempDir()
	s := writeScript(t, dir, "backend.sh", body)
	return config.ScriptConfig{Provision: s, Terminate: s, HealthCheck: s, GetInstance: s, List: s}, dir
}

func TestProvisionPassesContractOnStdinOnly(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	in := filepath.Join(dir, "stdin.json")
	script := writeScript(t, dir, "prov.sh", `cat > `+in+`
echo "args:$#" > `+dir+`/args
printf '%s' '{"success":true,"instance":{"external_id":"vm-7","ip_address":"10.0.0.7","ipv6_address":"fd00::7","ssh_port":2222,"root_password":"pw","additional_details":{"node":"pve1"}}}'
`)
	p := newProv(t, config.ScriptConfig{Provision: script, Terminate: script, HealthCheck: script})
	evil := "ssh-ed25519 AAAA $(touch " + marker + ") `touch " + marker + "`; touch " + marker
	var steps []string
	inst, err := p.Provision(context.Background(), provisioners.Request{
		ContractID: cid, OfferingID: "off-1", CPUCores: 2, MemoryMB: 4096, StorageGB: 50,
		RequesterSSHPubkey: evil, Config: map[string]any{"template": "debian-12", "nested": map[string]any{"a": 1.0}},
		PostProvisionScript: "echo hi > /root/x", WantPassword: true,
		Progress: func(s string) { steps = append(steps, s) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("contract data was interpreted by a shell")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "args")); strings.TrimSpace(string(b)) != "args:0" {
		t.Fatalf("script got arguments: %q", b)
	}
	raw, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("stdin is not JSON: %v: %s", err, raw)
	}
	want := map[string]any{
		"action": "provision", "contract_id": cid, "offering_id": "off-1", "cpu_cores": 2.0,
		"memory_mb": 4096.0, "storage_gb": 50.0, "requester_ssh_pubkey": evil,
		"post_provision_script": "echo hi > /root/x", "external_id": nil,
		"instance_name": "dc-" + cid, "want_password": true,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("stdin %s = %#v, want %#v", k, got[k], v)
		}
	}
	ic, _ := got["instance_config"].(map[string]any)
	if ic["template"] != "debian-12" || ic["nested"].(map[string]any)["a"] != 1.0 {
		t.Errorf("instance_config = %#v", got["instance_config"])
	}
	if inst.ExternalID != "vm-7" || inst.IPAddress != "10.0.0.7" || inst.IPv6Address != "fd00::7" || inst.SSHPort != 2222 ||
		inst.RootPassword != "pw" || inst.AdditionalDetails["node"] != "pve1" || inst.ContractID != cid || inst.Name != "dc-"+cid {
		t.Fatalf("instance = %+v", inst)
	}
	if len(steps) == 0 {
		t.Error("no progress step reported")
	}
}

func TestProvisionNullsForUnsetFields(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "stdin.json")
	script := writeScript(t, dir, "prov.sh", `cat > `+in+`
echo '{"success":true,"instance":{"external_id":"x"}}'
`)
	p := newProv(t, config.ScriptConfig{Provision: script, Terminate: script, HealthCheck: script})
	if _, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(in)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpu_cores", "memory_mb", "storage_gb", "instance_config", "post_provision_script", "offering_id"} {
		v, ok := got[k]
		if !ok || v != nil {
			t.Errorf("%s = %#v (present %v), want null like the earlier agent sent", k, v, ok)
		}
	}
	if got["want_password"] != false {
		t.Errorf("want_password = %#v, want false", got["want_password"])
	}
}

func TestFailures(t *testing.T) {
	// wantMsg is in the log's message; the tenant reads wantTenant only.
	cases := []struct {
		name       string
		body       string
		wantMsg    string
		wantRetry  bool
		wantTenant string
	}{
		{"nonzero exit with JSON", `echo '{"success":false,"error":"out of capacity","retry_possible":false}'; exit 3`, "exited with status 3: out of capacity", false, "out of capacity"},
		{"nonzero exit plain", `echo "boom on stderr" >&2; exit 1`, "exited with status 1: boom on stderr", true, "the provider's provisioning script failed (exit status 1)"},
		{"success false", `echo '{"success":false,"error":"template missing","retry_possible":true}'`, "template missing", true, "template missing"},
		{"success false no message", `echo '{"success":false}'`, "without an error message", true, "the provider's provisioning script failed without saying why"},
		{"garbage", `echo 'hello world'`, "not a JSON object", true, "the provider's provisioning script gave an answer the agent cannot read"},
		{"empty", `true`, "printed nothing", true, "the provider's provisioning script gave an answer the agent cannot read"},
		{"two objects", `echo '{"success":true} {"success":true}'`, "more than one JSON value", true, "the provider's provisioning script gave an answer the agent cannot read"},
		{"no instance", `echo '{"success":true}'`, "no \"instance\"", true, "the provider's provisioning script returned no instance"},
		{"no external id", `echo '{"success":true,"instance":{"ip_address":"1.2.3.4"}}'`, "without external_id", true, "the provider's provisioning script returned an incomplete instance"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc, _ := allScripts(t, tc.body)
			p := newProv(t, sc)
			_, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tc.wantMsg)
			}
			if got := provisioners.RetryPossible(err); got != tc.wantRetry {
				t.Fatalf("retry possible = %v, want %v", got, tc.wantRetry)
			}
			if got := provisioners.TenantMessage(err); got != tc.wantTenant {
				t.Fatalf("tenant message = %q, want %q", got, tc.wantTenant)
			}
		})
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "bg.pid")
	script := writeScript(t, dir, "slow.sh", `sleep 60 &
echo $! > `+pidFile+`
sleep 60
`)
	p := newProv(t, config.ScriptConfig{Provision: script, Terminate: script, HealthCheck: script, TimeoutSeconds: 1})
	start := time.Now()
	_, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want timeout", err)
	}
	if !provisioners.RetryPossible(err) {
		t.Error("a timeout should be retryable")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %s: the run was not cut off", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// The background child was in the script's process group: it must be gone.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("background process %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCancelIsNotAScriptFailure(t *testing.T) {
	sc, _ := allScripts(t, "sleep 60\n")
	p := newProv(t, sc)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := p.Provision(ctx, provisioners.Request{ContractID: cid})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestStdoutLimit(t *testing.T) {
	sc, _ := allScripts(t, `i=0; while [ $i -lt 3000 ]; do echo "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done`)
	sc.MaxOutputBytes = 10000
	p := newProv(t, sc)
	_, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid})
	if err == nil || !strings.Contains(err.Error(), "more than 10000 bytes") {
		t.Fatalf("err = %v", err)
	}
	if provisioners.RetryPossible(err) {
		t.Error("an oversized output will not fix itself")
	}
}

func TestHealthListGetTerminate(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "actions")
	body := `in=$(cat)
echo "$in" >> ` + log + `
case "$in" in
*'"action":"health_check"'*) echo '{"success":true,"health":{"status":"healthy","uptime_seconds":42,"latency_ms":3}}' ;;
*'"action":"list"'*) echo '{"success":true,"instances":[{"external_id":"vm-1","name":"dc-` + cid + `"},{"external_id":"vm-2","contract_id":"abc"},{"external_id":""}]}' ;;
*'"action":"get_instance"'*) echo '{"success":true,"instance":{"external_id":"vm-1","root_password":"leak"}}' ;;
*'"action":"terminate"'*) echo '{"success":true}' ;;
*) exit 9 ;;
esac
`
	sc, _ := allScripts(t, body)
	p := newProv(t, sc)
	ctx := context.Background()
	h, err := p.HealthCheck(ctx, "vm-1")
	if err != nil || h.Status != provisioners.Healthy || h.UptimeSeconds != 42 || h.LatencyMs == nil || *h.LatencyMs != 3 {
		t.Fatalf("health = %+v, %v", h, err)
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 2 || list[0].ContractID != cid || list[1].ContractID != "abc" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	got, err := p.GetInstance(ctx, cid)
	if err != nil || got == nil || got.ExternalID != "vm-1" || got.ContractID != cid || got.RootPassword != "" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if err := p.Terminate(ctx, "vm-1"); err != nil {
		t.Fatal(err)
	}
	f := p.Features()
	if !f.Terminate || !f.Health || !f.List || !f.GetByID || f.Manual {
		t.Fatalf("features = %+v", f)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), `"action":"terminate"`) || !strings.Contains(string(b), `"external_id":"vm-1"`) {
		t.Fatalf("terminate input: %s", b)
	}
}

// Finding 3 of issue 15: a script got the agent's whole environment (its
// tokens and settings, systemd's NOTIFY_SOCKET). It gets a minimal one:
// PATH, HOME, locale, TZ, TMPDIR and proxies, nothing else.
func TestScriptGetsMinimalEnvironment(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	sc, _ := allScripts(t, `env > `+envFile+`
echo '{"success":true,"health":{"status":"unknown"}}'`)
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("DC_AGENT_SETUP_TOKEN", "secret-token")
	t.Setenv("HCLOUD_TOKEN", "secret-hcloud")
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("LC_TIME", "C")
	t.Setenv("https_proxy", "http://proxy.internal:3128")
	t.Setenv("PATH", "/usr/bin:/bin")
	p := newProv(t, sc)
	if _, err := p.HealthCheck(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	for _, k := range []string{"NOTIFY_SOCKET", "DC_AGENT_SETUP_TOKEN", "HCLOUD_TOKEN"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s reached the script", k)
		}
	}
	for k, v := range map[string]string{"LANG": "C.UTF-8", "LC_TIME": "C", "https_proxy": "http://proxy.internal:3128", "PATH": "/usr/bin:/bin"} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// sh itself sets PWD, SHLVL and _; anything else came from the agent.
	for k := range got {
		switch k {
		case "PWD", "SHLVL", "_", "OLDPWD", "LANG", "LC_TIME", "https_proxy", "PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR", "LANGUAGE":
		default:
			if !strings.HasPrefix(k, "LC_") && !strings.HasSuffix(strings.ToLower(k), "_proxy") {
				t.Errorf("%s reached the script", k)
			}
		}
	}
}

func TestScriptEnvDefaultsPath(t *testing.T) {
	env := scriptEnv([]string{"HOME=/var/lib/dc-agent", "SECRET=x"})
	if strings.Join(env, " ") != "HOME=/var/lib/dc-agent PATH="+defaultPath {
		t.Fatalf("env = %q", env)
	}
}

func TestNewChecksScripts(t *testing.T) {
	dir := t.TempDir()
	ok := writeScript(t, dir, "ok.sh", "true\n")
	notExec := filepath.Join(dir, "noexec.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	cases := []struct {
		sc   config.ScriptConfig
		want string
	}{
		{config.ScriptConfig{Provision: filepath.Join(dir, "missing"), Terminate: ok, HealthCheck: ok}, "does not exist"},
		{config.ScriptConfig{Provision: notExec, Terminate: ok, HealthCheck: ok}, "chmod +x"},
		{config.ScriptConfig{Provision: ok, Terminate: ok}, "health_check script is not configured"},
		{config.ScriptConfig{Provision: dir, Terminate: ok, HealthCheck: ok}, "is a directory"},
	}
	for _, tc := range cases {
		_, err := New(config.ProvisionerConfig{Type: Type, Script: &tc.sc}, provisioners.Deps{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.sc, err, tc.want)
		}
	}
	p := newProv(t, config.ScriptConfig{Provision: ok, Terminate: ok, HealthCheck: ok})
	if f := p.Features(); f.List || f.GetByID {
		t.Errorf("features without list/get_instance scripts = %+v", f)
	}
	if _, err := p.List(context.Background()); err == nil {
		t.Error("List without a list script succeeded")
	}
}

func TestParseOutput(t *testing.T) {
	cases := []struct {
		in      string
		wantErr string
	}{
		{`{"success":true,"health":{"status":"sick"}}`, "not one of healthy"},
		{`{"success":true,"health":{"status":"healthy","uptime_seconds":-1}}`, "negative"},
		{`{"success":true,"instance":{"external_id":"a","ssh_port":70000}}`, "not a port"},
		{`[1,2]`, "not a JSON object"},
		{`"str"`, "not a JSON object"},
		{` {"success":true} `, ""},
		{`{"success":true,"unknown_field":1}`, ""},
	}
	for _, tc := range cases {
		_, err := ParseOutput([]byte(tc.in))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("ParseOutput(%s) = %v", tc.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseOutput(%s) = %v, want %q", tc.in, err, tc.wantErr)
		}
	}
}

func FuzzParseOutput(f *testing.F) {
	f.Add([]byte(`{"success":true,"instance":{"external_id":"vm-1","ip_address":"1.2.3.4","ssh_port":22,"additional_details":{"a":1}}}`))
	f.Add([]byte(`{"success":false,"error":"x","retry_possible":false}`))
	f.Add([]byte(`{"success":true,"health":{"status":"healthy","uptime_seconds":5}}`))
	f.Add([]byte(`{"success":true,"instances":[{"external_id":"a","name":"dc-x"}]}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ParseOutput(data)
		if err != nil {
			return
		}
		// Whatever parses must describe valid instances and health.
		if out.Health != nil {
			switch out.Health.Status {
			case provisioners.Healthy, provisioners.Unhealthy, provisioners.Unknown:
			default:
				t.Fatalf("accepted health status %q", out.Health.Status)
			}
		}
		for _, i := range append(out.Instances, out.Instance) {
			if i != nil {
				_ = toInstance(i)
				if i.SSHPort < 0 || i.SSHPort > 65535 {
					t.Fatalf("accepted port %d", i.SSHPort)
				}
			}
		}
	})
}

// The optional pause and resume scripts get the external id on stdin;
// one without the other is refused at start.
func TestPauseResumeScripts(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	s := writeScript(t, dir, "backend.sh", `cat >> `+log+`; echo >> `+log+`
echo '{"success":true}'
`)
	p := newProv(t, config.ScriptConfig{Provision: s, Terminate: s, HealthCheck: s, Pause: s, Resume: s})
	if !p.Features().Pause {
		t.Fatal("pause scripts configured but no Pause feature")
	}
	if err := p.Pause(context.Background(), "vm-7"); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(context.Background(), "vm-7"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"action":"pause"`) || !strings.Contains(lines[0], `"external_id":"vm-7"`) || !strings.Contains(lines[1], `"action":"resume"`) {
		t.Fatalf("calls: %q", lines)
	}
	if p := newProv(t, config.ScriptConfig{Provision: s, Terminate: s, HealthCheck: s}); p.Features().Pause {
		t.Fatal("Pause feature without pause scripts")
	}
	_, err := New(config.ProvisionerConfig{Type: Type, Script: &config.ScriptConfig{Provision: s, Terminate: s, HealthCheck: s, Pause: s, TimeoutSeconds: 5}}, provisioners.Deps{})
	if err == nil || !strings.Contains(err.Error(), "pause and resume scripts go together") {
		t.Fatalf("pause without resume: %v", err)
	}
}
