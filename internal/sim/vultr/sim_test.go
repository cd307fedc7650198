package vultrsim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vultr/govultr/v3"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func client(t *testing.T, token, url string) *govultr.Client {
	t.Helper()
	c := govultr.NewClient(&http.Client{Transport: bearer{token}})
	if err := c.SetBaseURL(url); err != nil {
		t.Fatal(err)
	}
	c.SetRetryLimit(0)
	return c
}

func pubKey(t *testing.T) string {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

// The whole lifecycle through the real govultr client.
func TestLifecycleWithRealClient(t *testing.T) {
	clk := simkit.NewClock(time.Unix(1_800_000_000, 0))
	s := New(Options{CreateDuration: 60 * time.Second, IPDelay: 10 * time.Second, PowerDuration: 5 * time.Second, DeleteDuration: 5 * time.Second, Now: clk.Now})
	c := client(t, s.Token(), s.Start(t))
	ctx := context.Background()

	key, _, err := c.SSHKey.Create(ctx, &govultr.SSHKeyReq{Name: "dc-key-1", SSHKey: pubKey(t)})
	if err != nil || key.ID == "" {
		t.Fatalf("key %+v %v", key, err)
	}
	if _, _, err := c.SSHKey.Create(ctx, &govultr.SSHKeyReq{Name: "bad", SSHKey: "ssh-ed25519 nope"}); err == nil || !strings.Contains(err.Error(), "Invalid SSH key") {
		t.Fatalf("bad key: %v", err)
	}
	avail, _, err := c.Region.Availability(ctx, "ams", "vc2")
	if err != nil || len(avail.AvailablePlans) != 6 {
		t.Fatalf("availability %+v %v", avail, err)
	}
	ipv6 := true
	in, _, err := c.Instance.Create(ctx, &govultr.InstanceCreateReq{Region: "ams", Plan: "vc2-1c-1gb", OsID: 2284, Label: "dc-x", Hostname: "dc-x",
		SSHKeys: []string{key.ID}, EnableIPv6: &ipv6, UserData: base64.StdEncoding.EncodeToString([]byte("#cloud-config\n")), Tags: []string{"dc-agent", "dc-contract-x"}})
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != "pending" || in.MainIP != "0.0.0.0" || in.DefaultPassword == "" || in.PowerStatus != "running" || in.ServerStatus != "none" {
		t.Fatalf("created %+v", in)
	}
	get := func() *govultr.Instance {
		t.Helper()
		g, _, err := c.Instance.Get(ctx, in.ID)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	if g := get(); g.DefaultPassword != "" {
		t.Fatal("GET shows the default password")
	}
	clk.Add(11 * time.Second)
	if g := get(); g.MainIP == "0.0.0.0" || g.V6MainIP == "" || g.Status != "pending" {
		t.Fatalf("after 11s %+v", g)
	}
	clk.Add(30 * time.Second)
	if g := get(); g.Status != "active" || g.ServerStatus != "installingbooting" {
		t.Fatalf("after 41s %+v", g)
	}
	clk.Add(20 * time.Second)
	if g := get(); g.ServerStatus != "ok" || s.UserData(in.ID) != "#cloud-config\n" {
		t.Fatalf("after 61s %+v", g)
	}

	// Cursor pagination with label and tag filters.
	for i := range 130 {
		s.AddInstance(fmt.Sprintf("other-%d", i), []string{"other"})
	}
	var all []govultr.Instance
	opt := &govultr.ListOptions{PerPage: 50, Tag: "other"}
	for {
		page, meta, _, err := c.Instance.List(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if meta.Links.Next == "" {
			break
		}
		opt.Cursor = meta.Links.Next
	}
	if len(all) != 130 {
		t.Fatalf("listed %d", len(all))
	}
	mine, _, _, err := c.Instance.List(ctx, &govultr.ListOptions{Tag: "dc-contract-x"})
	if err != nil || len(mine) != 1 || mine[0].ID != in.ID {
		t.Fatalf("by tag %v %v", mine, err)
	}
	byLabel, _, _, _ := c.Instance.List(ctx, &govultr.ListOptions{Label: "dc-x"})
	if len(byLabel) != 1 {
		t.Fatalf("by label %v", byLabel)
	}

	if err := c.Instance.Halt(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	clk.Add(6 * time.Second)
	if g := get(); g.PowerStatus != "stopped" {
		t.Fatalf("halted %+v", g)
	}
	if err := c.Instance.Start(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if g := get(); g.ServerStatus != "installingbooting" {
		t.Fatalf("starting %+v", g)
	}
	clk.Add(6 * time.Second)
	if g := get(); g.PowerStatus != "running" || g.ServerStatus != "ok" {
		t.Fatalf("started %+v", g)
	}

	if err := c.Instance.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if g := get(); g.ServerStatus != "locked" {
		t.Fatalf("deleting %+v", g)
	}
	clk.Add(6 * time.Second)
	if _, _, err := c.Instance.Get(ctx, in.ID); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("deleted: %v", err)
	}
	if err := c.SSHKey.Delete(ctx, key.ID); err != nil || len(s.Keys()) != 0 {
		t.Fatalf("key delete %v", err)
	}
}

func TestFaults(t *testing.T) {
	clk := simkit.NewClock(time.Unix(1_800_000_000, 0))
	s := New(Options{CreateDuration: time.Second, PerSecond: 20, Now: clk.Now})
	c := client(t, s.Token(), s.Start(t))
	ctx := context.Background()
	create := func(plan, region string) (*govultr.Instance, error) {
		in, _, err := c.Instance.Create(ctx, &govultr.InstanceCreateReq{Region: region, Plan: plan, OsID: 2136, Label: "f"})
		return in, err
	}
	s.FailNextInstall()
	in, err := create("vc2-1c-1gb", "ewr")
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Second)
	if g, _, _ := c.Instance.Get(ctx, in.ID); g.PowerStatus != "stopped" || g.ServerStatus != "none" {
		t.Fatalf("failed install %+v", g)
	}
	s.FailNext("start", "Unable to start server")
	if err := c.Instance.Start(ctx, in.ID); err == nil || !strings.Contains(err.Error(), "Unable to start server") {
		t.Fatalf("start fault: %v", err)
	}
	if _, err := create("vhf-1c-1gb", "syd"); err == nil || !strings.Contains(err.Error(), "not available in region syd") {
		t.Fatalf("plan not offered: %v", err)
	}
	s.SetAvailable("vc2-1c-2gb", "fra", false)
	avail, _, _ := c.Region.Availability(ctx, "fra", "")
	for _, p := range avail.AvailablePlans {
		if p == "vc2-1c-2gb" {
			t.Fatal("out-of-stock plan listed")
		}
	}
	if _, err := create("vc2-1c-2gb", "fra"); err == nil {
		t.Fatal("out-of-stock plan created")
	}
	s.FailPlacement("vc2-2c-4gb", "lhr", true)
	if _, err := create("vc2-2c-4gb", "lhr"); err == nil {
		t.Fatal("placement fault ignored")
	}
	if _, _, err := c.Instance.Create(ctx, &govultr.InstanceCreateReq{Region: "ewr", Plan: "vc2-1c-1gb", OsID: 2284, UserData: "#cloud-config"}); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Fatalf("plain user_data: %v", err)
	}
	s.RateLimitNext(1)
	if _, _, _, err := c.Instance.List(ctx, nil); err == nil || !strings.Contains(err.Error(), "Rate limit") {
		t.Fatalf("429: %v", err)
	}
	var limited error
	for range 40 {
		if _, _, _, err := c.OS.List(ctx, nil); err != nil {
			limited = err
			break
		}
	}
	if limited == nil || !strings.Contains(limited.Error(), "Rate limit") {
		t.Fatalf("per-second limit: %v", limited)
	}
	if _, _, err := client(t, "wrong", "http://"+strings.TrimPrefix(strings.TrimPrefix(c.BaseURL.String(), "http://"), "/")).Account.Get(ctx); err == nil || !strings.Contains(err.Error(), "Invalid API token") {
		t.Fatalf("bad token: %v", err)
	}
}
