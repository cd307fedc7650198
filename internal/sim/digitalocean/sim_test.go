package dosim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

func client(t *testing.T, s *Sim, url string) *godo.Client {
	t.Helper()
	c, err := godo.New(http.DefaultClient, godo.SetBaseURL(url))
	if err != nil {
		t.Fatal(err)
	}
	c.OnRequestCompleted(nil)
	c.HTTPClient = &http.Client{Transport: bearer{s.Token()}}
	return c
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func pubKey(t *testing.T) string {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func waitAction(t *testing.T, c *godo.Client, id int) *godo.Action {
	t.Helper()
	for range 2000 {
		a, _, err := c.Actions.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != godo.ActionInProgress {
			return a
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("action %d never finished", id)
	return nil
}

func errStatus(err error) int {
	var er *godo.ErrorResponse
	if errors.As(err, &er) {
		return er.Response.StatusCode
	}
	return 0
}

// The whole lifecycle through the real godo client: this is what the
// simulator exists for, so it checks the wire shapes the library relies on.
func TestLifecycleWithRealClient(t *testing.T) {
	clk := simkit.NewClock(time.Unix(1_800_000_000, 0))
	s := New(Options{CreateDuration: 40 * time.Second, IPDelay: 60 * time.Second, Now: clk.Now})
	c := client(t, s, s.Start(t))
	ctx := context.Background()

	pk := pubKey(t)
	key, _, err := c.Keys.Create(ctx, &godo.KeyCreateRequest{Name: "dc-key-1", PublicKey: pk})
	if err != nil || key.Fingerprint != simkit.Fingerprint(pk) || !strings.Contains(key.Fingerprint, ":") {
		t.Fatalf("key %+v %v", key, err)
	}
	if _, _, err := c.Keys.Create(ctx, &godo.KeyCreateRequest{Name: "again", PublicKey: pk}); errStatus(err) != 422 {
		t.Fatalf("duplicate key: %v", err)
	}
	byFP, _, err := c.Keys.GetByFingerprint(ctx, key.Fingerprint)
	if err != nil || byFP.ID != key.ID {
		t.Fatalf("by fingerprint %+v %v", byFP, err)
	}

	d, resp, err := c.Droplets.Create(ctx, &godo.DropletCreateRequest{
		Name: "dc-test", Region: "ams3", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"},
		SSHKeys: []godo.DropletCreateSSHKey{{ID: key.ID}}, IPv6: true, UserData: "#cloud-config\n", Tags: []string{"dc-agent", "dc-contract-x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || d.Status != "new" || len(resp.Links.Actions) != 1 || resp.Links.Actions[0].Rel != "create" {
		t.Fatalf("create: %d %+v %+v", resp.StatusCode, d, resp.Links)
	}
	if ip, _ := d.PublicIPv4(); ip != "" {
		t.Fatal("an address at creation")
	}
	if a, _, _ := c.Actions.Get(ctx, resp.Links.Actions[0].ID); a.Status != godo.ActionInProgress || a.ResourceID != d.ID {
		t.Fatalf("action %+v", a)
	}
	// A droplet with an action in progress refuses another.
	if _, _, err := c.DropletActions.PowerOff(ctx, d.ID); errStatus(err) != 422 || !strings.Contains(err.Error(), "pending event") {
		t.Fatalf("power off while creating: %v", err)
	}
	clk.Add(41 * time.Second)
	if a, _, _ := c.Actions.Get(ctx, resp.Links.Actions[0].ID); a.Status != godo.ActionCompleted || a.CompletedAt == nil {
		t.Fatalf("action %+v", a)
	}
	got, _, _ := c.Droplets.Get(ctx, d.ID)
	if ip, _ := got.PublicIPv4(); got.Status != "active" || ip != "" {
		t.Fatalf("active droplet before its address: %s %q", got.Status, ip)
	}
	clk.Add(20 * time.Second)
	got, _, _ = c.Droplets.Get(ctx, d.ID)
	ip4, _ := got.PublicIPv4()
	ip6, _ := got.PublicIPv6()
	if ip4 == "" || ip6 == "" || got.Region.Slug != "ams3" || got.SizeSlug != "s-1vcpu-1gb" || s.UserData(d.ID) != "#cloud-config\n" {
		t.Fatalf("droplet %+v", got)
	}

	// Pagination and tag filter: 45 other droplets.
	for i := range 45 {
		s.AddDroplet(fmt.Sprintf("other-%d", i), []string{"other"})
	}
	var all []godo.Droplet
	opt := &godo.ListOptions{PerPage: 20}
	for {
		page, r, err := c.Droplets.ListByTag(ctx, "other", opt)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if r.Links == nil || r.Links.IsLastPage() {
			break
		}
		p, _ := r.Links.CurrentPage()
		opt.Page = p + 1
	}
	if len(all) != 45 {
		t.Fatalf("listed %d", len(all))
	}
	mine, _, err := c.Droplets.ListByTag(ctx, "dc-contract-x", nil)
	if err != nil || len(mine) != 1 || mine[0].ID != d.ID {
		t.Fatalf("by tag: %v %v", mine, err)
	}
	byName, _, _ := c.Droplets.ListByName(ctx, "DC-TEST", nil)
	if len(byName) != 1 {
		t.Fatalf("by name (case-insensitive): %v", byName)
	}

	a, _, err := c.DropletActions.PowerOff(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	if a, _, _ := c.DropletActions.Get(ctx, d.ID, a.ID); a.Status != godo.ActionCompleted {
		t.Fatalf("power off %+v", a)
	}
	if got, _, _ := c.Droplets.Get(ctx, d.ID); got.Status != "off" {
		t.Fatalf("status %s", got.Status)
	}
	acts, _, _ := c.Droplets.Actions(ctx, d.ID, nil)
	if len(acts) != 2 || acts[0].Type != "power_off" || acts[1].Type != "create" {
		t.Fatalf("actions %+v", acts)
	}

	if _, err := c.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Droplets.Get(ctx, d.ID); err != nil || !got.Locked {
		t.Fatalf("right after delete: %+v %v", got, err)
	}
	clk.Add(time.Minute)
	if _, _, err := c.Droplets.Get(ctx, d.ID); errStatus(err) != 404 {
		t.Fatalf("deleted droplet: %v", err)
	}
	if tags := s.Tags(); !contains(tags, "dc-contract-x") {
		t.Fatalf("tags %v", tags)
	}
	if _, err := c.Tags.Delete(ctx, "dc-contract-x"); err != nil || contains(s.Tags(), "dc-contract-x") {
		t.Fatalf("tag delete: %v %v", err, s.Tags())
	}
	if _, err := c.Keys.DeleteByID(ctx, key.ID); err != nil || len(s.Keys()) != 0 {
		t.Fatalf("key delete: %v", err)
	}
}

func TestFaultsAndLimits(t *testing.T) {
	s := New(Options{CreateDuration: time.Millisecond, RetryAfter: 3 * time.Second, BurstLimit: 30})
	c := client(t, s, s.Start(t))
	ctx := context.Background()
	create := func(size, region string) (*godo.Droplet, *godo.Response, error) {
		return c.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "f", Region: region, Size: size, Image: godo.DropletCreateImage{Slug: "debian-12-x64"}})
	}

	s.FailNextAction("create")
	d, resp, err := create("s-1vcpu-1gb", "nyc3")
	if err != nil {
		t.Fatal(err)
	}
	if a := waitAction(t, c, resp.Links.Actions[0].ID); a.Status != "errored" {
		t.Fatalf("action %+v", a)
	}
	if got, _, _ := c.Droplets.Get(ctx, d.ID); got.Status != "new" {
		t.Fatalf("droplet of an errored create is %s", got.Status)
	}

	if _, _, err := create("c-2", "sgp1"); errStatus(err) != 422 || !strings.Contains(err.Error(), "not available in this region") {
		t.Fatalf("size not offered: %v", err)
	}
	s.SetSizeAvailable("s-1vcpu-1gb", "fra1", false)
	sizes, _, _ := c.Sizes.List(ctx, &godo.ListOptions{PerPage: 200})
	for _, sz := range sizes {
		if sz.Slug == "s-1vcpu-1gb" && contains(sz.Regions, "fra1") {
			t.Fatal("unavailable size still lists the region")
		}
	}
	if _, _, err := create("s-1vcpu-1gb", "fra1"); errStatus(err) != 422 {
		t.Fatalf("unavailable size: %v", err)
	}
	s.FailPlacement("s-1vcpu-2gb", "lon1", true)
	if _, _, err := create("s-1vcpu-2gb", "lon1"); errStatus(err) != 422 {
		t.Fatalf("placement: %v", err)
	}
	if _, _, err := create("s-1vcpu-1gb", "xyz9"); errStatus(err) != 422 || !strings.Contains(err.Error(), "invalid region") {
		t.Fatalf("region: %v", err)
	}

	s.RateLimitNext(1)
	_, r, err := c.Droplets.List(ctx, nil)
	if errStatus(err) != 429 || r.Header.Get("Retry-After") != "3" {
		t.Fatalf("429: %v %v", err, r.Header)
	}
	_, r, err = c.Droplets.List(ctx, nil)
	if err != nil || r.Rate.Limit != 5000 || r.Rate.Remaining <= 0 || r.Rate.Reset.IsZero() {
		t.Fatalf("rate %+v %v", r.Rate, err)
	}
	// The burst limit: 30 per minute here.
	var limited error
	for range 40 {
		if _, _, err := c.Regions.List(ctx, nil); err != nil {
			limited = err
			break
		}
	}
	if errStatus(limited) != 429 {
		t.Fatalf("burst limit: %v", limited)
	}

	bad, _ := godo.New(http.DefaultClient, godo.SetBaseURL(s.url))
	if _, _, err := bad.Account.Get(ctx); errStatus(err) != 401 {
		t.Fatalf("no token: %v", err)
	}
}
