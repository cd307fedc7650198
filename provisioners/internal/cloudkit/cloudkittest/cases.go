package cloudkittest

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Provisioned gives req a new SSH key, provisions it and fails t if that
// fails; it returns the request as provisioned and the instance.
func Provisioned(t testing.TB, p provisioners.Provisioner, req provisioners.Request) (provisioners.Request, provisioners.Instance) {
	t.Helper()
	req.RequesterSSHPubkey = SSHKey(t)
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return req, inst
}

// Choice is one case of a backend's choice of machine type and location:
// Mod changes the test request; the provision then fails with an error
// containing WantErr (retryable or not), or makes a machine whose
// AdditionalDetails name WantType and WantLoc.
type Choice struct {
	Name              string
	Mod               func(*provisioners.Request)
	WantType, WantLoc string
	WantErr           string
	Retryable         bool
}

// Choices runs the cases against p, case i with request(first+i) and a new
// SSH key; typeKey and locKey are the AdditionalDetails keys of the machine
// type and location ("size", "region"). A machine made is terminated, a
// failed provision must leave none.
func Choices(t *testing.T, p provisioners.Provisioner, request func(int) provisioners.Request, first int, typeKey, locKey string, cases []Choice) {
	t.Helper()
	ctx := context.Background()
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			req := request(first + i)
			req.RequesterSSHPubkey = SSHKey(t)
			c.Mod(&req)
			inst, err := p.Provision(ctx, req)
			if c.WantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.WantErr) || provisioners.RetryPossible(err) != c.Retryable {
					t.Fatalf("err %v, want %q (retryable %v)", err, c.WantErr, c.Retryable)
				}
				if g, _ := p.GetInstance(ctx, req.ContractID); g != nil {
					t.Fatal("failed provision left a machine")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if inst.AdditionalDetails[typeKey] != c.WantType || inst.AdditionalDetails[locKey] != c.WantLoc {
				t.Fatalf("got %v in %v, want %s in %s", inst.AdditionalDetails[typeKey], inst.AdditionalDetails[locKey], c.WantType, c.WantLoc)
			}
			if err := p.Terminate(ctx, inst.ExternalID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Failure is one fault injected into a backend's simulator (S), with the
// simulator options it needs (SimOpts on O, nil: none), and what the
// provision it makes fail must say.
type Failure[S, O any] struct {
	Name      string
	Inject    func(S)
	SimOpts   func(*O)
	WantErr   []string
	Retryable bool
}

// Failures provisions contract i with a new SSH key for case i, each on a
// fresh simulator and provisioner from setup (given the case's SimOpts;
// empty checks that nothing the agent creates is left), with the case's
// fault injected: the provision must fail as the case says and, injected
// 429s lifted, leave nothing behind.
func Failures[S interface{ RateLimitNext(int) }, O any](t *testing.T, cases []Failure[S, O],
	setup func(t *testing.T, simOpts func(*O)) (p provisioners.Provisioner, sim S, empty func(*testing.T))) {
	t.Helper()
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			p, sim, empty := setup(t, c.SimOpts)
			c.Inject(sim)
			req := Request(i)
			req.RequesterSSHPubkey = SSHKey(t)
			_, err := p.Provision(context.Background(), req)
			WantFailure(t, err, c.WantErr, c.Retryable)
			sim.RateLimitNext(0)
			empty(t)
		})
	}
}

// PauseResume provisions req with a new SSH key, then pauses the machine
// twice and resumes it twice (both are idempotent), checking its state
// after each: off after a pause, on after a resume; paused runs between.
// It returns the provisioned instance.
func PauseResume(t *testing.T, p provisioners.Provisioner, req provisioners.Request, state func() string, off, on string, paused func(ext string)) provisioners.Instance {
	t.Helper()
	ctx := context.Background()
	_, inst := Provisioned(t, p, req)
	pp, ok := p.(provisioners.Pauser)
	if !ok || !p.Features().Pause {
		t.Fatal("not a Pauser, or Features().Pause not set")
	}
	for range 2 {
		if err := pp.Pause(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != off {
			t.Fatalf("after pause: %s", s)
		}
	}
	if paused != nil {
		paused(inst.ExternalID)
	}
	for range 2 {
		if err := pp.Resume(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != on {
			t.Fatalf("after resume: %s", s)
		}
	}
	return inst
}

// Foreign checks that a machine the agent did not create (id foreign;
// machines counts the account's machines) is neither deleted nor listed,
// that a malformed id is refused for good, and that a foreign machine
// holding the name of contract 9's machine (clash adds one) makes its
// provision fail for good with an error containing clashMsg, creating
// nothing (keys counts the key objects).
func Foreign(t *testing.T, p provisioners.Provisioner, foreign string, machines, keys func() int, clash func(), clashMsg string) {
	t.Helper()
	ctx := context.Background()
	err := p.Terminate(ctx, foreign)
	if err == nil || !strings.Contains(err.Error(), "refusing") || provisioners.RetryPossible(err) {
		t.Fatalf("err %v", err)
	}
	if machines() != 1 {
		t.Fatal("foreign machine deleted")
	}
	if err := p.Terminate(ctx, "../dc-abc"); err == nil || provisioners.RetryPossible(err) {
		t.Fatalf("bad id: %v", err)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("foreign machine listed: %v %v", list, err)
	}
	clash()
	req := Request(9)
	req.RequesterSSHPubkey = SSHKey(t)
	_, err = p.Provision(ctx, req)
	if err == nil || provisioners.RetryPossible(err) || !strings.Contains(err.Error(), clashMsg) {
		t.Fatalf("name clash: %v", err)
	}
	if machines() != 2 || keys() != 0 {
		t.Fatalf("after the clash: %d machines, %d keys", machines(), keys())
	}
}

// ProviderKeyKept checks that a key object the provider uploaded himself
// (upload: with this name and public key, returning its id) is reused for
// a requester with that key and never deleted; keys returns the account's
// key objects, id to name.
func ProviderKeyKept(t *testing.T, p provisioners.Provisioner, upload func(name, pub string) (id string), keys func() map[string]string) {
	t.Helper()
	ctx := context.Background()
	own := SSHKey(t)
	id := upload("provider-key", own)
	req := Request(3)
	req.RequesterSSHPubkey = own
	inst, err := p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(); len(k) != 1 || k[id] == "" {
		t.Fatalf("keys %v, want only %s", k, id)
	}
	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	if k := keys(); len(k) != 1 || k[id] != "provider-key" {
		t.Fatalf("provider key deleted: %v", k)
	}
}

// CloudConfig checks the user data ud of a machine made for req (with an
// SSH key): cloud-config, the post-provision script embedded, password
// logins off and no password set.
func CloudConfig(t testing.TB, ud string, req provisioners.Request) {
	t.Helper()
	if !strings.HasPrefix(ud, "#cloud-config\n") || !strings.Contains(ud, base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\n"+req.PostProvisionScript))) ||
		!strings.Contains(ud, "ssh_pwauth: false") || strings.Contains(ud, "chpasswd") {
		t.Errorf("user data:\n%s", ud)
	}
}

// RefusedAccess checks that a contract with neither an SSH key nor a
// password to seal (contract 2) and one with a malformed key (contract 3)
// are refused for good, creating no machine (machines counts them).
func RefusedAccess(t *testing.T, p provisioners.Provisioner, machines func() int) {
	t.Helper()
	ctx := context.Background()
	n := machines()
	if _, err := p.Provision(ctx, Request(2)); err == nil || provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "no SSH key") {
		t.Fatalf("no key, no password: %v", err)
	}
	req := Request(3)
	req.RequesterSSHPubkey = "ssh-rsa not-base64!"
	if _, err := p.Provision(ctx, req); err == nil || provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "SSH key") {
		t.Fatalf("bad key: %v", err)
	}
	if machines() != n {
		t.Fatal("a refused contract created a machine")
	}
}

// ProvisionedSteps is Provisioned, checking also that the provision
// reported at least minSteps progress steps.
func ProvisionedSteps(t testing.TB, p provisioners.Provisioner, req provisioners.Request, minSteps int) (provisioners.Request, provisioners.Instance) {
	t.Helper()
	var steps []string
	req.Progress = func(s string) { steps = append(steps, s) }
	req, inst := Provisioned(t, p, req)
	if len(steps) < minSteps {
		t.Errorf("progress steps: %q", steps)
	}
	return req, inst
}

// Build makes a test's provisioner: build (the backend's New) from cfg,
// changed by mod (nil: no change); an error fails t.
func Build[C, P any](t testing.TB, cfg C, mod func(*C), build func(C) (P, error)) P {
	t.Helper()
	if mod != nil {
		mod(&cfg)
	}
	p, err := build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
