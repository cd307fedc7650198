package main

import (
	"context"
	"encoding/hex"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestTenantRequestCommands: `contract reset-password` and `rotate-ssh-key`
// run in another process reach a running server's agent (its event stream
// and pending lists); `contract requests` shows what became of them.
func TestTenantRequestCommands(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "dc-api.db")
	prov, _ := identity.GenerateKey()
	provHex := identity.PublicHex(prov)
	mustCLI(t, "--db", dsn, "provider", "add", provHex)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, _ := apiserver.New(apiserver.Config{Store: st, WatchInterval: 20 * time.Millisecond})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, time.Second) }()
	defer func() {
		cancel()
		<-served
	}()
	agent, _ := identity.GenerateKey()
	sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(agent), ProviderPubkey: provHex, Permissions: identity.AllPermissions}.Sign(prov)
	c, _ := dcapi.New("http://"+ln.Addr().String(), provHex, agent)
	if err := c.RegisterDelegation(ctx, sd); err != nil {
		t.Fatal(err)
	}
	key := sshKey(t)
	cid := strings.TrimSpace(mustCLI(t, "--db", dsn, "contract", "create", "--provider", provHex, "--ssh-pubkey", key))
	if _, errs, code := cli(t, "--db", dsn, "contract", "reset-password", cid); code == 0 || !strings.Contains(errs, "only be requested for provisioned or active contracts") {
		t.Fatalf("reset of an accepted contract: exit %d %s", code, errs)
	}
	if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
		t.Fatal(err)
	}
	up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "ct-1"})
	if err := c.UpdateProvisioning(ctx, cid, up); err != nil {
		t.Fatal(err)
	}

	events := make(chan dcapi.PasswordResetEvent, 4)
	go func() { _ = c.PasswordResetEvents(ctx, time.Minute, func(e dcapi.PasswordResetEvent) { events <- e }) }()
	if e := <-events; e.Count != 0 {
		t.Fatalf("first event %+v", e)
	}
	if out, errs, code := cliProcess(t, "--db", dsn, "contract", "reset-password", cid); code != 0 || !strings.Contains(out, "password reset requested") {
		t.Fatalf("reset-password: exit %d %s %s", code, out, errs)
	}
	select {
	case e := <-events:
		if e.Count != 1 || e.ContractIDs[0] != cid {
			t.Fatalf("event %+v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the CLI's request did not reach the event stream")
	}
	resets, err := c.PendingPasswordResets(ctx)
	sshPub, _, _ := identity.SealRecipient("", key)
	if err != nil || len(resets) != 1 || resets[0].SealTo != hex.EncodeToString(sshPub) || resets[0].RequestedAtNs == 0 {
		t.Fatalf("resets %+v %v", resets, err)
	}

	if _, errs, code := cli(t, "--db", dsn, "contract", "rotate-ssh-key", cid, "--ssh-pubkey", "ssh-ed25519 !"); code == 0 || !strings.Contains(errs, "Invalid SSH public key format") {
		t.Fatalf("bad key: exit %d %s", code, errs)
	}
	newKey := sshKey(t)
	mustCLI(t, "--db", dsn, "contract", "rotate-ssh-key", cid, "--ssh-pubkey", newKey)
	rots, err := c.PendingKeyRotations(ctx)
	if err != nil || len(rots) != 1 || rots[0].SSHPubkey != newKey {
		t.Fatalf("rotations %+v %v", rots, err)
	}
	if err := c.ReportKeyRotation(ctx, cid, dcapi.KeyRotationUpdate{Error: "SSH key rotation failed: not supported"}); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, "--db", dsn, "contract", "requests", cid)
	if !strings.Contains(out, "password reset") || !strings.Contains(out, "pending") || !strings.Contains(out, "failed: SSH key rotation failed: not supported") {
		t.Fatalf("requests:\n%s", out)
	}
}
