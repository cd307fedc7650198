package apiserver_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// seedDashboard makes an online provider with a clean 100 % record, an
// offline one under 99 %, and one that never ran an agent.
func seedDashboard(t *testing.T, srv *apitest.Server) (online, offline, never *apitest.Provider) {
	t.Helper()
	ctx := context.Background()
	online, offline, never = srv.NewProvider("Alpine Compute"), srv.NewProvider("Flaky Cloud"), srv.NewProvider("Newcomer Hosting")
	now := srv.Now()
	for i, p := range []*apitest.Provider{online, offline} {
		key := srv.NewAgent(p)
		agent := identity.PublicHex(key)
		c := srv.Client(p, key)
		var ids []string
		for j := 0; j < 3; j++ {
			id := srv.CreateContract(p, apitest.ContractSpec{})
			if err := c.UpdateProvisioning(ctx, id, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
				t.Fatal(err)
			}
			up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-" + string(rune('a'+j))})
			if err := c.UpdateProvisioning(ctx, id, up); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		srv.CreateContract(p, apitest.ContractSpec{}) // one waiting
		// 12 days of checks every 2 hours; the second provider is down one
		// check in six for the last 5 days.
		var checks []dcapi.HealthCheck
		for h := 0; h < 12*24; h += 2 {
			at := now.Add(-time.Duration(h) * time.Hour)
			for _, id := range ids {
				st := dcapi.HealthHealthy
				if i == 1 && h < 5*24 && (h/2)%6 == 0 {
					st = dcapi.HealthUnhealthy
				}
				checks = append(checks, dcapi.HealthCheck{ContractID: id, CheckedAt: at.UnixNano(), Status: st, LatencyMs: apitest.Ptr(20 + h%7)})
			}
		}
		// Each round reported as it happened (checks are not backdated).
		for j := 0; j < len(checks); j += len(ids) {
			round := checks[j : j+len(ids)]
			if _, err := srv.Store.InsertHealthChecks(ctx, p.Pubkey, agent, round, round[0].CheckedAt); err != nil {
				t.Fatal(err)
			}
		}
		hbAt := now.Add(-12 * time.Second)
		if i == 1 {
			hbAt = now.Add(-17 * time.Minute)
		}
		if err := srv.Store.RecordHeartbeat(ctx, p.Pubkey, agent, dcapi.Heartbeat{Version: "0.9." + string(rune('0'+i)), ProvisionerType: []string{"proxmox", "hetzner"}[i]}, hbAt.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	return online, offline, never
}

// chromium runs headless Chromium with the flags of DESIGN.md and returns
// its stdout. Its whole process group is stopped afterwards.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := testutil.RequireBinary(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// TestDashboardInChromium renders GET / in headless Chromium, asserts on
// the rendered DOM (badges, last heartbeat, uptime and its highlight, the
// chart) and on the screenshot's pixels (the badge colours are drawn), and
// keeps the screenshot as an artifact.
func TestDashboardInChromium(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t)
	online, offline, never := seedDashboard(t, srv)

	dom, err := html.Parse(bytes.NewReader(chromium(t, "--dump-dom", srv.URL+"/")))
	if err != nil {
		t.Fatal(err)
	}
	cards := map[string]*html.Node{}
	walk(dom, func(n *html.Node) {
		if p := attr(n, "data-provider"); p != "" {
			cards[p] = n
		}
	})
	if len(cards) != 3 {
		t.Fatalf("rendered %d provider cards, want 3", len(cards))
	}
	check := func(p *apitest.Provider, state, badge, uptime string, low bool, lastSeen string) {
		t.Helper()
		card := cards[p.Pubkey]
		if card == nil {
			t.Fatalf("no card for %s", p.Name)
		}
		if got := attr(card, "data-state"); got != state {
			t.Errorf("%s: state %q, want %q", p.Name, got, state)
		}
		if got := text(role(card, "badge")); got != badge {
			t.Errorf("%s: badge %q, want %q", p.Name, got, badge)
		}
		if got := text(role(card, "uptime")); !strings.HasPrefix(got, uptime) {
			t.Errorf("%s: uptime %q, want %q…", p.Name, got, uptime)
		}
		if got := strings.Contains(attr(card, "class"), "low"); got != low {
			t.Errorf("%s: highlighted=%v, want %v", p.Name, got, low)
		}
		if got := text(role(card, "last-heartbeat")); !strings.Contains(got, lastSeen) {
			t.Errorf("%s: last heartbeat %q, want %q", p.Name, got, lastSeen)
		}
		bars := 0
		walk(role(card, "chart"), func(n *html.Node) {
			if n.Type == html.ElementNode && n.Data == "rect" {
				bars++
			}
		})
		if bars != 30 {
			t.Errorf("%s: chart has %d bars, want 30 (days)", p.Name, bars)
		}
	}
	check(online, "online", "Online", "100.00 %", false, "s ago")
	check(offline, "offline", "Offline", "9", true, "17 min ago")
	check(never, "never", "No agent", "no checks", false, "never")
	if got := text(role(cards[online.Pubkey], "provisioner")); got != "proxmox" {
		t.Errorf("provisioner = %q", got)
	}
	if got := text(role(cards[online.Pubkey], "active")); got != "3" {
		t.Errorf("active contracts = %q", got)
	}
	var refresh bool
	walk(dom, func(n *html.Node) {
		if n.Data == "meta" && attr(n, "http-equiv") == "refresh" {
			refresh = true
		}
	})
	if !refresh {
		t.Error("the page does not refresh itself")
	}

	// The screenshot: kept as an artifact, and checked for the drawn badges.
	dir := os.Getenv("DC_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "dc-agent-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "dashboard.png")
	chromium(t, "--screenshot="+shot, "--window-size=1280,1100", srv.URL+"/")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1100 {
		t.Fatalf("screenshot is %v", b)
	}
	for name, rgb := range map[string][3]int{"online badge green": {0x16, 0xa3, 0x4a}, "offline badge red": {0xdc, 0x26, 0x26}, "low-uptime amber": {0xd9, 0x77, 0x06}} {
		if n := countNear(img, rgb); n < 20 {
			t.Errorf("screenshot shows %d pixels of the %s; it was not drawn", n, name)
		}
	}
	t.Logf("dashboard screenshot: %s", shot)
}

func countNear(img image.Image, rgb [3]int) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if abs(int(r>>8)-rgb[0]) < 12 && abs(int(g>>8)-rgb[1]) < 12 && abs(int(bl>>8)-rgb[2]) < 12 {
				n++
			}
		}
	}
	return n
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func walk(n *html.Node, f func(*html.Node)) {
	if n == nil {
		return
	}
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func attr(n *html.Node, key string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// role finds the first element under n with data-role=r.
func role(n *html.Node, r string) *html.Node {
	var found *html.Node
	walk(n, func(c *html.Node) {
		if found == nil && attr(c, "data-role") == r {
			found = c
		}
	})
	return found
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return strings.Join(strings.Fields(b.String()), " ")
}
