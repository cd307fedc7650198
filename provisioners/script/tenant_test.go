package script

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// The tenant actions are optional: without their scripts the backend says
// so; with them the password and key travel on stdin only, with the
// contract and instance named.
func TestTenantActions(t *testing.T) {
	sc, _ := allScripts(t, `echo '{"success":true}'`)
	p := newProv(t, sc)
	if f := p.Features(); f.ResetPassword || f.RotateSSHKey {
		t.Fatalf("features without the scripts: %+v", f)
	}
	if _, err := p.ResetPassword(context.Background(), cid, "vm-1", "pw"); err == nil || !strings.Contains(provisioners.TenantMessage(err), "not supported by this provider's script backend") {
		t.Fatalf("reset without a script: %v", err)
	}

	dir := t.TempDir()
	in := filepath.Join(dir, "stdin.json")
	s := writeScript(t, dir, "tenant.sh", `cat > `+in+`
echo "args:$#" > `+dir+`/args
echo '{"success":true}'
`)
	sc.ResetPassword, sc.RotateSSHKey = s, s
	p = newProv(t, sc)
	if f := p.Features(); !f.ResetPassword || !f.RotateSSHKey {
		t.Fatalf("features: %+v", f)
	}
	read := func() map[string]any {
		t.Helper()
		b, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if a, _ := os.ReadFile(filepath.Join(dir, "args")); string(a) != "args:0\n" {
			t.Fatalf("arguments: %q", a)
		}
		return m
	}
	got, err := p.ResetPassword(context.Background(), cid, "vm-1", "s3cret pw")
	if err != nil || got != "s3cret pw" {
		t.Fatalf("reset: %q %v", got, err)
	}
	if m := read(); m["action"] != "reset_password" || m["password"] != "s3cret pw" || m["contract_id"] != cid || m["external_id"] != "vm-1" || m["instance_name"] != "dc-"+cid {
		t.Fatalf("reset stdin: %v", m)
	}
	if err := p.RotateSSHKey(context.Background(), cid, "vm-1", "ssh-ed25519 AAAA k"); err != nil {
		t.Fatal(err)
	}
	if m := read(); m["action"] != "rotate_ssh_key" || m["requester_ssh_pubkey"] != "ssh-ed25519 AAAA k" || m["password"] != nil {
		t.Fatalf("rotate stdin: %v", m)
	}
}

// A failing tenant script: the tenant reads its JSON error only, and its
// retry verdict counts.
func TestTenantActionFails(t *testing.T) {
	sc, dir := allScripts(t, `echo '{"success":true}'`)
	sc.ResetPassword = writeScript(t, dir, "reset.sh", `echo "secret detail at /srv/x" >&2; echo '{"success":false,"error":"the VM is off","retry_possible":false}'; exit 1`)
	p := newProv(t, config.ScriptConfig(sc))
	_, err := p.ResetPassword(context.Background(), cid, "vm-1", "pw")
	if err == nil || provisioners.TenantMessage(err) != "the VM is off" || provisioners.RetryPossible(err) {
		t.Fatalf("%v (tenant %q)", err, provisioners.TenantMessage(err))
	}
}

// A reset_password script that echoes its input (stdin, hence the
// password) on stderr, in its error and on a bad stdout: the password is
// in none of what is logged or told to the tenant.
func TestTenantResetHidesThePassword(t *testing.T) {
	const pw = "Zq8-secret-Pw-4711"
	for name, body := range map[string]string{
		"error":  `pw=$(sed 's/.*"password":"\([^"]*\)".*/\1/'); printf '{"success":false,"error":"rejected %s"}' "$pw"; exit 1`,
		"stderr": `in=$(cat); echo "got $in" >&2; exit 3`,
		"stdout": `cat`,
	} {
		t.Run(name, func(t *testing.T) {
			sc, dir := allScripts(t, `echo '{"success":true}'`)
			sc.ResetPassword = writeScript(t, dir, "reset.sh", body)
			p := newProv(t, config.ScriptConfig(sc))
			_, err := p.ResetPassword(context.Background(), cid, "vm-1", pw)
			if err == nil {
				t.Fatal("the reset succeeded")
			}
			var re *RunError
			stderr := ""
			if errors.As(err, &re) {
				stderr = re.Stderr
			}
			for what, s := range map[string]string{"error": err.Error(), "tenant message": provisioners.TenantMessage(err), "stderr": stderr} {
				if strings.Contains(s, pw) {
					t.Errorf("the %s shows the password: %q", what, s)
				}
			}
		})
	}
}
