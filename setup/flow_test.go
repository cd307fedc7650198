package setup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
)

// scriptUI plays a front end: each question is answered by its function
// (nil: the prefill), and every question and event is recorded.
type scriptUI struct {
	api      func(q APIQuestion) (APIAnswer, error)
	ssh      func(q SSHQuestion) (SSHAnswer, error)
	password func() (string, error)
	hostKey  func(q HostKeyQuestion) (bool, error)
	choose   func(q ChoiceQuestion) (Choices, error)
	delegate func(q DelegationQuestion) (string, error)
	ended    func(p Phase, err error) (bool, error)

	mu     sync.Mutex
	asked  []string
	errs   []error // each question's Err, in order
	events []Event
}

func (u *scriptUI) note(what string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.asked = append(u.asked, what)
	u.errs = append(u.errs, err)
}

func (u *scriptUI) Prerequisites(context.Context, []Check) (bool, error) {
	u.note("prereqs", nil)
	return false, nil
}

func (u *scriptUI) API(_ context.Context, q APIQuestion) (APIAnswer, error) {
	u.note("api", q.Err)
	if u.api == nil {
		return q.Answer, q.Err
	}
	return u.api(q)
}

func (u *scriptUI) SSH(_ context.Context, q SSHQuestion) (SSHAnswer, error) {
	u.note("ssh", q.Err)
	if u.ssh == nil {
		return q.Answer, q.Err
	}
	return u.ssh(q)
}

func (u *scriptUI) Password(context.Context, string, string) (string, error) {
	u.note("password", nil)
	if u.password == nil {
		return "", errors.New("no terminal")
	}
	return u.password()
}

func (u *scriptUI) ConfirmHostKey(_ context.Context, q HostKeyQuestion) (bool, error) {
	u.note("hostkey", nil)
	if u.hostKey == nil {
		return true, nil
	}
	return u.hostKey(q)
}

func (u *scriptUI) Choose(_ context.Context, q ChoiceQuestion) (Choices, error) {
	u.note("choose", q.Err)
	if u.choose == nil {
		return q.Choices, q.Err
	}
	return u.choose(q)
}

func (u *scriptUI) Delegate(_ context.Context, q DelegationQuestion) (string, error) {
	u.note("delegate", q.Err)
	if u.delegate == nil {
		return "", nil
	}
	return u.delegate(q)
}

func (u *scriptUI) Started(p Phase, _ []Step) { u.note("started:"+string(p), nil) }

func (u *scriptUI) Event(e Event) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.events = append(u.events, e)
}

func (u *scriptUI) Ended(_ context.Context, p Phase, err error) (bool, error) {
	if u.ended == nil {
		return false, err
	}
	return u.ended(p, err)
}

// texts are the events' texts of a kind in a phase.
func (u *scriptUI) texts(p Phase, kind EventKind) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, e := range u.events {
		if e.Phase == p && e.Kind == kind {
			out = append(out, e.Text)
		}
	}
	return out
}

func (u *scriptUI) count(what string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, a := range u.asked {
		if a == what {
			n++
		}
	}
	return n
}

// flowOptions are complete answers for the fixture's node (no service).
func (f *fixture) flowOptions(endpoint, provider string) FlowOptions {
	h := f.host
	return FlowOptions{
		Answers: ProxmoxAnswers{ConfigPath: filepath.Join(f.dir, "dc-agent.toml"), StateDir: filepath.Join(f.dir, "state"),
			APIEndpoint: endpoint, ProviderPubkey: provider, ImageMirror: f.images.URL, ImageDir: filepath.Join(h.Dir, "images")},
		SSH:     SSHAnswer{Host: h.Host, Port: h.Port, User: h.User, IdentityFile: h.ClientKeyFile},
		Request: DelegationAnswers{Label: "flow-test"},
	}
}

// TestFlowKnowsWhatIsDone: a first run asks everything and registers the
// pasted delegation; a second run asks neither about the (pinned) host key
// nor for a delegation: the API holds it, and the flow says so.
func TestFlowKnowsWhatIsDone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "9.1.1")
	srv := apitest.Start(t)
	prov := srv.NewProvider("Acme")
	o := f.flowOptions(srv.URL, prov.Pubkey)

	ui := &scriptUI{delegate: func(q DelegationQuestion) (string, error) {
		return srv.SignDelegation(prov, q.Request.AgentPubkey).Encode()
	}}
	flow := NewFlow(o, ui)
	if err := flow.Run(context.Background()); err != nil {
		t.Fatalf("%v\nasked %v", err, ui.asked)
	}
	want := []string{"prereqs", "api", "ssh", "hostkey", "started:connect", "choose", "started:node", "delegate", "started:register"}
	if !slices.Equal(ui.asked, want) {
		t.Fatalf("asked %v, want %v", ui.asked, want)
	}
	if flow.Stage() != StageRegistered || !strings.Contains(flow.Hint(), "registered, but the service is not installed") {
		t.Fatalf("stage %d, hint %q", flow.Stage(), flow.Hint())
	}
	key := flow.Summary().Key
	if d := srv.Delegation(prov, key.Pubkey); d == nil {
		t.Fatal("the API holds no delegation for the agent")
	}
	if b, err := os.ReadFile(RequestFilePath(o.Answers.ConfigPath)); err != nil || !strings.HasPrefix(string(b), "dcdr1:") {
		t.Fatalf("the request file: %v %q", err, b)
	}

	again := &scriptUI{delegate: func(DelegationQuestion) (string, error) { t.Error("asked for a delegation again"); return "", nil }}
	flow = NewFlow(o, again)
	if err := flow.Run(context.Background()); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	want = []string{"prereqs", "api", "ssh", "started:connect", "choose", "started:node", "started:register"}
	if !slices.Equal(again.asked, want) {
		t.Fatalf("re-run asked %v, want %v", again.asked, want)
	}
	reg := again.texts(PhaseRegister, EventSkipped)
	if len(reg) != 1 || !strings.Contains(reg[0], "already registered with "+srv.URL) || !strings.Contains(reg[0], key.Pubkey) {
		t.Fatalf("the registration is not reported as done: %q", reg)
	}
	if done := again.texts(PhaseNode, EventDone); len(done) != 0 {
		t.Errorf("the re-run changed the node: %q", done)
	}
	if flow.Stage() != StageRegistered {
		t.Fatalf("re-run stage %d", flow.Stage())
	}

	// Revoked: not registered any more, so the request is offered again.
	srv.RevokeDelegation(prov, key.Pubkey)
	third := &scriptUI{}
	flow = NewFlow(o, third)
	if err := flow.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if third.count("delegate") != 1 || flow.Stage() != StageNodeReady {
		t.Fatalf("after a revocation: asked %v, stage %d", third.asked, flow.Stage())
	}
	for _, w := range []string{"not registered yet", RequestFilePath(o.Answers.ConfigPath), "register --delegation"} {
		if !strings.Contains(flow.Hint(), w) {
			t.Errorf("the hint lacks %q:\n%s", w, flow.Hint())
		}
	}
}

// TestFlowAsksAgainWithTheReason walks back and forth: every refused
// answer comes back with its reason, back goes to the question before,
// retry runs the plan again, and "later" ends before registering.
func TestFlowAsksAgainWithTheReason(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "8.4.1")
	o := f.flowOptions("http://127.0.0.1:9", f.prov)
	o.Answers.Storage = "nope"
	sshCalls, chooseCalls, nodeRuns := 0, 0, 0
	ui := &scriptUI{}
	ui.ssh = func(q SSHQuestion) (SSHAnswer, error) {
		sshCalls++
		a := q.Answer
		switch sshCalls {
		case 1:
			return a, ErrBack // to the API question
		case 2:
			a.Host = "pve;reboot"
		case 3:
			var ae *AnswerError
			if !errors.As(q.Err, &ae) || ae.Field != "host" {
				t.Errorf("a hostile host is not refused as such: %v", q.Err)
			}
			a.Host = f.host.Host
		}
		return a, nil
	}
	hostKeys := 0
	ui.hostKey = func(q HostKeyQuestion) (bool, error) {
		hostKeys++
		if q.Info.Fingerprint != f.host.HostKeyFingerprint() || q.PinsPath != f.pins {
			t.Errorf("host key question: %+v", q)
		}
		return hostKeys > 1, nil // not the first time
	}
	ui.choose = func(q ChoiceQuestion) (Choices, error) {
		chooseCalls++
		c := q.Choices
		switch chooseCalls {
		case 1:
			var ae *AnswerError
			if !errors.As(q.Err, &ae) || ae.Field != "storage" || ae.Value != "nope" || c.Storage != "" || c.Bridge != "vmbr0" {
				t.Errorf("a prefilled storage the node lacks: %v, %+v", q.Err, c)
			}
			return Choices{Rediscover: true}, nil
		case 2:
			return Choices{Storage: "local-lvm", Bridge: "vmbr9", Templates: c.Templates}, nil
		case 3:
			if q.Err == nil || !strings.Contains(q.Err.Error(), `bridge "vmbr9"`) {
				t.Errorf("a bridge the node lacks: %v", q.Err)
			}
			c.Bridge = "vmbr0"
		}
		return c, nil
	}
	ui.ended = func(p Phase, err error) (bool, error) {
		if p == PhaseNode && err == nil {
			nodeRuns++
			return nodeRuns == 1, nil // run it twice
		}
		return false, err
	}
	flow := NewFlow(o, ui)
	if err := flow.Run(context.Background()); err != nil {
		t.Fatalf("%v\nasked %v", err, ui.asked)
	}
	if ui.count("api") != 2 || sshCalls != 4 || hostKeys != 2 || ui.count("started:connect") != 2 || chooseCalls != 3 || nodeRuns != 2 {
		t.Fatalf("asked %v (ssh %d, host keys %d, choose %d, node runs %d)", ui.asked, sshCalls, hostKeys, chooseCalls, nodeRuns)
	}
	var sshErrs []error
	for i, a := range ui.asked {
		if a == "ssh" {
			sshErrs = append(sshErrs, ui.errs[i])
		}
	}
	if e := sshErrs[3]; e == nil || !strings.Contains(e.Error(), "was not accepted") {
		t.Errorf("a host key not accepted is not the reason to ask again: %v", e)
	}
	// Registering later: the flow ends after the node, and says how to go on.
	if flow.Stage() != StageNodeReady || !strings.Contains(flow.Hint(), "dcdr1:") {
		t.Fatalf("stage %d, hint %q", flow.Stage(), flow.Hint())
	}
}

// TestFlowRefusesBadPrefillFirst: a wrong flag is named before anything
// is asked or touched.
func TestFlowRefusesBadPrefillFirst(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		field string
		mod   func(o *FlowOptions)
	}{
		{"expires", func(o *FlowOptions) { o.Request.Expires = "soon" }},
		{"label", func(o *FlowOptions) { o.Request.Label = "a\nb" }},
		{"permissions", func(o *FlowOptions) { o.Request.Permissions = "everything" }},
		{"templates", func(o *FlowOptions) { o.Answers.Templates = []string{"windows"} }},
		{"host-key-fingerprint", func(o *FlowOptions) { o.HostKeyFingerprint = "MD5:aa:bb" }},
		{"image-dir", func(o *FlowOptions) { o.Answers.ImageDir = "relative/dir" }},
		{"template-vmid-base", func(o *FlowOptions) { o.Answers.VMIDBase = 5 }},
	} {
		o := FlowOptions{Answers: ProxmoxAnswers{ConfigPath: filepath.Join(dir, "dc-agent.toml")}}
		c.mod(&o)
		ui := &scriptUI{}
		err := NewFlow(o, ui).Run(context.Background())
		var ae *AnswerError
		if !errors.As(err, &ae) || ae.Field != c.field || len(ui.asked) != 0 {
			t.Errorf("%s: %v (asked %v)", c.field, err, ui.asked)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "dc-agent.toml")); err == nil {
		t.Error("a refused prefill wrote a config")
	}
}

// TestLoginOrder: one order for every front end: the key file, ssh-agent,
// the password (all that are given); the usual key or a typed password
// only when none is.
func TestLoginOrder(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	pwFile := filepath.Join(home, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	asked := 0
	ui := &scriptUI{password: func() (string, error) { asked++; return "typed", nil }}
	f := NewFlow(FlowOptions{Answers: ProxmoxAnswers{ConfigPath: filepath.Join(home, "dc-agent.toml")}}, ui)
	login := func(a SSHAnswer) SSHOptions {
		t.Helper()
		o, err := f.loginOptions(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	if o := login(SSHAnswer{IdentityFile: "~/k", Password: "pw"}); o.IdentityFile != filepath.Join(home, "k") || o.Password != "pw" || o.UseAgent {
		t.Fatalf("key and password: %+v", o)
	}
	if o := login(SSHAnswer{PasswordFile: pwFile}); o.Password != "from-file" || o.IdentityFile != "" {
		t.Fatalf("password file: %+v", o)
	}
	t.Setenv("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
	if o := login(SSHAnswer{}); !o.UseAgent || o.IdentityFile != "" || asked != 0 {
		t.Fatalf("ssh-agent: %+v", o)
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	if o := login(SSHAnswer{}); o.Password != "typed" || asked != 1 {
		t.Fatalf("nothing given: %+v (asked %d)", o, asked)
	}
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o := login(SSHAnswer{}); o.IdentityFile != filepath.Join(home, ".ssh", "id_ed25519") || asked != 1 {
		t.Fatalf("the usual key: %+v", o)
	}
	ui.password = func() (string, error) { return "", fmt.Errorf("no terminal") }
	if _, err := f.loginOptions(context.Background(), SSHAnswer{PasswordFile: filepath.Join(home, "missing")}); err == nil {
		t.Fatal("a missing password file was accepted")
	}
}
