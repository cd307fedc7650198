package cloudkittest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// ContractID is the n-th test contract's id (64 lowercase hex digits).
func ContractID(n int) string {
	s := sha256.Sum256([]byte(fmt.Sprint("contract", n)))
	return hex.EncodeToString(s[:])
}

// SSHKey is a new ed25519 authorized_keys line without a comment.
func SSHKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

// Request is the n-th test contract's request: 2 cores, 4 GiB, 40 GB.
func Request(n int) provisioners.Request {
	return provisioners.Request{ContractID: ContractID(n), OfferingID: "off-small", CPUCores: 2, MemoryMB: 4096, StorageGB: 40}
}

// WantFailure fails t unless err is an error mentioning every one of wants
// whose RetryPossible is retryable.
func WantFailure(t testing.TB, err error, wants []string, retryable bool) {
	t.Helper()
	if err == nil {
		t.Fatal("provision succeeded")
	}
	t.Log(err)
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if provisioners.RetryPossible(err) != retryable {
		t.Errorf("retryable = %v", provisioners.RetryPossible(err))
	}
}

// Lifecycle checks what follows the provisioning of inst for req (the only
// instance in the account; what names the kind, "droplet"): it is healthy,
// found by GetInstance and List, provisioning again returns it (count, the
// number of machines in the account, stays 1), Terminate leaves the
// account as empty checks, and the gone instance is unhealthy and may be
// terminated again.
func Lifecycle(t *testing.T, p provisioners.Provisioner, req provisioners.Request, inst provisioners.Instance, what string, count func() int, empty func(*testing.T)) {
	t.Helper()
	ctx := context.Background()
	h, err := p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Healthy || h.UptimeSeconds < 0 {
		t.Fatalf("health %+v %v", h, err)
	}
	got, err := p.GetInstance(ctx, req.ContractID)
	if err != nil || got == nil || got.ExternalID != inst.ExternalID || got.IPv6Address != inst.IPv6Address {
		t.Fatalf("get instance %+v %v", got, err)
	}
	if none, err := p.GetInstance(ctx, ContractID(-1)); err != nil || none != nil {
		t.Fatalf("other contract: %+v %v", none, err)
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 1 || list[0].ContractID != req.ContractID {
		t.Fatalf("list %+v %v", list, err)
	}

	// Idempotent: provisioning the same contract again finds the machine.
	again, err := p.Provision(ctx, req)
	if err != nil || again.ExternalID != inst.ExternalID || count() != 1 {
		t.Fatalf("second provision: %+v %v (%d %ss)", again, err, count(), what)
	}

	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	empty(t)
	h, err = p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Unhealthy || !strings.Contains(h.Reason, "no longer exists") {
		t.Fatalf("health after terminate: %+v %v", h, err)
	}
	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatalf("terminating a gone %s: %v", what, err)
	}
}

// SharedKey provisions contracts 1 and 2 with one SSH key and checks that
// the account holds one key object (keys counts them) until both are
// terminated, and then empty.
func SharedKey(t *testing.T, p provisioners.Provisioner, request func(int) provisioners.Request, keys func() int, empty func(*testing.T)) {
	t.Helper()
	ctx := context.Background()
	key := SSHKey(t)
	var ids []string
	for i := 1; i <= 2; i++ {
		req := request(i)
		req.RequesterSSHPubkey = key
		inst, err := p.Provision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inst.ExternalID)
	}
	if n := keys(); n != 1 {
		t.Fatalf("one key object expected for one public key, got %d", n)
	}
	if err := p.Terminate(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if n := keys(); n != 1 {
		t.Fatal("key deleted while a machine still uses it")
	}
	if err := p.Terminate(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	empty(t)
}

// ProvisionOne provisions req with a new SSH key and checks that count, the
// number of machines in the account, is then 1.
func ProvisionOne(t *testing.T, p provisioners.Provisioner, req provisioners.Request, count func() int) {
	t.Helper()
	req.RequesterSSHPubkey = SSHKey(t)
	if _, err := p.Provision(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d machines", n)
	}
}

// Uptime checks that machine ext is healthy with at least minUptime
// seconds of uptime, and that 90 s later on the provisioner's clock (set
// by setNow) its uptime is 90 s more.
func Uptime(t *testing.T, p provisioners.Provisioner, ext string, setNow func(time.Time), minUptime int64) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	setNow(now)
	h, err := p.HealthCheck(ctx, ext)
	if err != nil || h.Status != provisioners.Healthy || h.UptimeSeconds < minUptime {
		t.Fatalf("%+v %v (uptime at least %d s expected)", h, err, minUptime)
	}
	setNow(now.Add(90 * time.Second))
	h2, _ := p.HealthCheck(ctx, ext)
	if h2.UptimeSeconds-h.UptimeSeconds != 90 {
		t.Fatalf("uptime %d then %d", h.UptimeSeconds, h2.UptimeSeconds)
	}
}

// BadTokens checks that newWith (the backend's New against its
// simulator, with this token) refuses an empty, blank or spaced token, and
// that a provisioner whose token the API rejects fails to provision with
// an error naming every one of wants.
func BadTokens(t *testing.T, newWith func(token string) (provisioners.Provisioner, error), wants ...string) {
	t.Helper()
	for _, tok := range []string{"", "  ", "a b"} {
		if _, err := newWith(tok); err == nil {
			t.Errorf("token %q accepted", tok)
		}
	}
	wrong, err := newWith("wrong-token")
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Provision(context.Background(), provisioners.Request{ContractID: ContractID(1), WantPassword: true})
	if err == nil {
		t.Fatal("provisioned with a rejected token")
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("err %v does not mention %q", err, w)
		}
	}
}

// TokenFile checks a backend's factory: it builds the provisioner from a
// config file in a directory holding the token file, whose name section
// sets as the api_token_file of the backend's section of pc. A 0600 token
// file is read, a world-readable one refused, a missing section refused.
func TokenFile(t *testing.T, typ, token string, factory provisioners.Factory, section func(pc *config.ProvisionerConfig, file string)) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/loose", []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir+"/loose", 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Path: dir + "/dc-agent.toml"}
	build := func(file string) (provisioners.Provisioner, error) {
		pc := config.ProvisionerConfig{Type: typ}
		if file != "" {
			section(&pc, file)
		}
		return factory(pc, provisioners.Deps{Config: cfg})
	}
	p, err := build("token")
	if err != nil || p.Type() != typ {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := build("loose"); err == nil {
		t.Fatal("world-readable token file accepted")
	}
	if _, err := factory(config.ProvisionerConfig{Type: typ}, provisioners.Deps{}); err == nil {
		t.Fatal("missing section accepted")
	}
}
