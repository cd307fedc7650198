package cloudkittest

import (
	"context"
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
