package hcloudsim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/exp/kit/sshutil"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

func client(t *testing.T, s *Sim, url string) *hcloud.Client {
	t.Helper()
	return hcloud.NewClient(
		hcloud.WithEndpoint(url), hcloud.WithToken(s.Token()),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(2 * time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: 3}),
	)
}

func pubKey(t *testing.T) string {
	t.Helper()
	_, pub, err := sshutil.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return string(pub)
}

// The whole lifecycle through the real hcloud-go client: this is what the
// simulator exists for, so it checks the wire shapes the library relies on.
func TestLifecycleWithRealClient(t *testing.T) {
	s := New(Options{ActionDuration: 5 * time.Millisecond})
	c := client(t, s, s.Start(t))
	ctx := context.Background()

	pk := pubKey(t)
	key, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "k1", PublicKey: pk, Labels: map[string]string{"dc-agent/managed": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	if key.ID == 0 || key.Fingerprint != simkit.Fingerprint(pk) || !strings.Contains(key.Fingerprint, ":") {
		t.Fatalf("key %+v", key)
	}
	if _, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "k2", PublicKey: pk}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Fatalf("duplicate fingerprint: %v", err)
	}
	byFP, _, err := c.SSHKey.GetByFingerprint(ctx, key.Fingerprint)
	if err != nil || byFP == nil || byFP.ID != key.ID {
		t.Fatalf("by fingerprint: %v %v", byFP, err)
	}

	res, _, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{
		Name: "dc-test", ServerType: &hcloud.ServerType{Name: "cx23"}, Image: &hcloud.Image{Name: "ubuntu-24.04"},
		Location: &hcloud.Location{Name: "nbg1"}, SSHKeys: []*hcloud.SSHKey{key}, UserData: "#cloud-config\n",
		Labels: map[string]string{"dc-agent/managed": "true", "x": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.RootPassword != "" {
		t.Fatal("root password returned although an SSH key was given")
	}
	if res.Server.Status != hcloud.ServerStatusInitializing || len(res.NextActions) != 1 || res.Action.Status != hcloud.ActionStatusRunning {
		t.Fatalf("create result %+v %+v", res.Server, res.Action)
	}
	if err := c.Action.WaitFor(ctx, append([]*hcloud.Action{res.Action}, res.NextActions...)...); err != nil {
		t.Fatal(err)
	}
	sv, _, err := c.Server.GetByID(ctx, res.Server.ID)
	if err != nil || sv == nil {
		t.Fatalf("get: %v %v", sv, err)
	}
	if sv.Status != hcloud.ServerStatusRunning || sv.PublicNet.IPv4.IP == nil || sv.PublicNet.IPv6.Network == nil {
		t.Fatalf("server %+v", sv)
	}
	if ones, _ := sv.PublicNet.IPv6.Network.Mask.Size(); ones != 64 {
		t.Fatalf("ipv6 network %v", sv.PublicNet.IPv6.Network)
	}
	if sv.Location.Name != "nbg1" || sv.ServerType.Name != "cx23" || s.UserData(sv.ID) != "#cloud-config\n" {
		t.Fatalf("server fields %+v", sv)
	}

	// Pagination: 60 unrelated servers plus ours, listed with a selector.
	for i := range 60 {
		s.AddServer(fmt.Sprintf("other-%d", i), map[string]string{"x": "1"})
	}
	all, err := c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "x=1"}})
	if err != nil || len(all) != 61 {
		t.Fatalf("all: %d %v", len(all), err)
	}
	mine, err := c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "dc-agent/managed=true"}})
	if err != nil || len(mine) != 1 || mine[0].ID != sv.ID {
		t.Fatalf("mine: %v %v", mine, err)
	}

	del, _, err := c.Server.DeleteWithResult(ctx, sv)
	if err != nil || del.Action == nil {
		t.Fatalf("delete: %v %v", del, err)
	}
	if err := c.Action.WaitFor(ctx, del.Action); err != nil {
		t.Fatal(err)
	}
	gone, _, err := c.Server.GetByID(ctx, sv.ID)
	if err != nil || gone != nil {
		t.Fatalf("deleted server: %v %v", gone, err)
	}
	if _, err := c.SSHKey.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if len(s.SSHKeys()) != 0 {
		t.Fatal("key still there")
	}
}

func TestNoSSHKeyGivesRootPassword(t *testing.T) {
	s := New(Options{ActionDuration: time.Millisecond})
	c := client(t, s, s.Start(t))
	res, _, err := c.Server.Create(context.Background(), hcloud.ServerCreateOpts{
		Name: "pw", ServerType: &hcloud.ServerType{Name: "cpx12"}, Image: &hcloud.Image{Name: "debian-12"},
	})
	if err != nil || res.RootPassword == "" {
		t.Fatalf("%v %q", err, res.RootPassword)
	}
}

func TestFaults(t *testing.T) {
	s := New(Options{ActionDuration: time.Millisecond})
	url := s.Start(t)
	c := client(t, s, url)
	ctx := context.Background()
	create := func(name, typ, loc string) (hcloud.ServerCreateResult, error) {
		r, _, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{
			Name: name, ServerType: &hcloud.ServerType{Name: typ}, Image: &hcloud.Image{Name: "ubuntu-24.04"}, Location: &hcloud.Location{Name: loc},
		})
		return r, err
	}

	s.FailNextAction("create_server", "action_failed", "host crashed")
	r, err := create("a1", "cx23", "fsn1")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Action.WaitFor(ctx, append([]*hcloud.Action{r.Action}, r.NextActions...)...)
	var ae hcloud.ActionError
	if !asActionError(err, &ae) || ae.Code != "action_failed" || ae.Message != "host crashed" {
		t.Fatalf("action error: %#v", err)
	}
	if sv, _, _ := c.Server.GetByID(ctx, r.Server.ID); sv == nil || sv.Status != hcloud.ServerStatusOff {
		t.Fatalf("failed create leaves the server off: %+v", sv)
	}

	s.SetAvailable("cx33", "hel1", false)
	if _, err := create("a2", "cx33", "hel1"); !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
	s.FailPlacement("cx43", "fsn1", true)
	if _, err := create("a3", "cx43", "fsn1"); !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) {
		t.Fatalf("placement: %v", err)
	}
	if _, err := create("a4", "cx23", "ash"); !hcloud.IsError(err, hcloud.ErrorCodeInvalidInput) {
		t.Fatalf("unsupported location: %v", err)
	}
	if _, err := create(strings.Repeat("a", 64), "cx23", "fsn1"); !hcloud.IsError(err, hcloud.ErrorCodeInvalidInput) {
		t.Fatalf("long name: %v", err)
	}

	// Rate limit: the library retries 3 times, so 3 limited requests pass
	// and 4 do not.
	s.RateLimitNext(3)
	if _, _, err := c.Server.GetByID(ctx, r.Server.ID); err != nil {
		t.Fatalf("after 3x 429: %v", err)
	}
	s.RateLimitNext(4)
	_, resp, err := c.Server.GetByID(ctx, r.Server.ID)
	if !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) || resp.Meta.Ratelimit.Remaining != 0 {
		t.Fatalf("after 4x 429: %v", err)
	}

	// Wrong token, unknown route: JSON errors.
	bad := hcloud.NewClient(hcloud.WithEndpoint(url), hcloud.WithToken("nope"))
	if _, _, err := bad.Server.GetByID(ctx, 1); !hcloud.IsError(err, hcloud.ErrorCodeUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, url+"/nothing", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token())
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if hr.StatusCode != 404 || hr.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"code":"not_found"`) {
		t.Fatalf("404: %d %s %s", hr.StatusCode, hr.Header.Get("Content-Type"), body)
	}
}

func asActionError(err error, out *hcloud.ActionError) bool {
	ae, ok := err.(hcloud.ActionError)
	if ok {
		*out = ae
	}
	return ok
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"a": "1", "dc-agent/managed": "true", "env": "prod"}
	for _, c := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"a=1", true},
		{"a==1", true},
		{"a=2", false},
		{"a!=2", true},
		{"a!=1", false},
		{"a", true},
		{"!a", false},
		{"!b", true},
		{"env in (prod, dev)", true},
		{"env notin (prod)", false},
		{"dc-agent/managed=true,a=1", true},
		{"dc-agent/managed=true,a=2", false},
	} {
		sel, err := parseSelector(c.sel)
		if err != nil {
			t.Fatalf("%q: %v", c.sel, err)
		}
		if got := sel.matches(labels); got != c.want {
			t.Errorf("%q matches = %v, want %v", c.sel, got, c.want)
		}
	}
	for _, bad := range []string{"a=1,", "=1", "a in 1", "-a", "a=b c"} {
		if _, err := parseSelector(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// The selector arrives from outside (any client's query string).
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"a=1", "a!=b,c", "!x", "k in (a,b)", "k notin ()", "a==,", "(((", "x/y=z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := parseSelector(s)
		if err != nil {
			return
		}
		// Whatever parsed must be usable.
		_ = sel.matches(map[string]string{"a": "1", "k": "a"})
		for _, r := range sel {
			if !validLabelKey(r.key) {
				t.Fatalf("accepted invalid key %q from %q", r.key, s)
			}
		}
	})
}
