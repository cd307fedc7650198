package apiserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// getPage fetches the dashboard path from the loopback address ip.
func getPage(t *testing.T, srv *apitest.Server, ip, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := fromAddr(ip).Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// TestPublicDashboardCostAndDisclosure (issue 15, finding 4): GET / is
// public. It cost about four queries per provider on every request and
// showed full contract ids, backend instance ids and agent versions. Now
// it shows short contract ids and neither of the others, is rendered from a
// snapshot rebuilt at most every few seconds, is limited per client address
// and paginated. Both profiles.
func TestPublicDashboardCostAndDisclosure(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		t.Parallel()
		ctx := context.Background()

		t.Run("disclosure", func(t *testing.T) {
			srv := apitest.Start(t, apitest.WithProfile(profile))
			p := srv.NewProvider("Discreet Hosting")
			key := srv.NewAgent(p)
			c := srv.Client(p, key)
			cid := srv.CreateContract(p, apitest.ContractSpec{})
			if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
				t.Fatal(err)
			}
			up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "pve-vm-4242-internal"})
			if err := c.UpdateProvisioning(ctx, cid, up); err != nil {
				t.Fatal(err)
			}
			if err := srv.Store.RecordHeartbeat(ctx, p.Pubkey, identity.PublicHex(key), dcapi.Heartbeat{Version: "7.7.7-vulnerable", ProvisionerType: "proxmox"}, srv.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
			status, body, _ := getPage(t, srv, "127.0.0.1", "/")
			if status != 200 || !strings.Contains(body, "Discreet Hosting") || !strings.Contains(body, cid[:8]) {
				t.Fatalf("dashboard: %d, provider or short contract id missing:\n%s", status, body)
			}
			for what, secret := range map[string]string{"the full contract id": cid, "the backend instance id": "pve-vm-4242-internal", "the agent version": "7.7.7-vulnerable"} {
				if strings.Contains(body, secret) || strings.Contains(body, cid[:16]) {
					t.Errorf("the public dashboard shows %s (%s)", what, secret)
				}
			}
		})

		t.Run("snapshot", func(t *testing.T) {
			srv := apitest.Start(t, apitest.WithProfile(profile))
			srv.FreezeClock()
			srv.NewProvider("First")
			if _, body, _ := getPage(t, srv, "127.0.0.1", "/"); strings.Count(body, "data-provider=") != 1 {
				t.Fatalf("first page shows %d providers, want 1", strings.Count(body, "data-provider="))
			}
			// Within the snapshot's age, requests are served from it:
			// nothing is read from the database.
			srv.NewProvider("Second")
			srv.SetClockOffset(apiserver.DashboardSnapshotAge - time.Millisecond)
			for range 5 {
				if _, body, _ := getPage(t, srv, "127.0.0.1", "/"); strings.Count(body, "data-provider=") != 1 || strings.Contains(body, "Second") {
					t.Fatal("the dashboard read the database again within the snapshot's age")
				}
			}
			srv.SetClockOffset(apiserver.DashboardSnapshotAge)
			if _, body, _ := getPage(t, srv, "127.0.0.1", "/"); !strings.Contains(body, "Second") {
				t.Fatal("the snapshot was not rebuilt after its age")
			}
		})

		t.Run("rate limit per address", func(t *testing.T) {
			srv := apitest.Start(t, apitest.WithProfile(profile))
			srv.FreezeClock()
			srv.NewProvider("Popular")
			n := 0
			for ; n < 1000; n++ {
				status, _, h := getPage(t, srv, "127.0.0.1", "/")
				if status == http.StatusTooManyRequests {
					if h.Get("Retry-After") == "" {
						t.Fatal("429 without Retry-After")
					}
					break
				}
				if status != 200 {
					t.Fatalf("request %d: %d", n+1, status)
				}
			}
			if n < 10 || n >= 100 {
				t.Fatalf("one address got %d pages before 429; want a limit between 10 and 100", n)
			}
			if status, _, _ := getPage(t, srv, "127.0.0.2", "/"); status != 200 {
				t.Fatalf("another address: %d, want 200", status)
			}
			srv.SetClockOffset(5 * time.Second)
			if status, _, _ := getPage(t, srv, "127.0.0.1", "/"); status != 200 {
				t.Fatalf("the limited address, 5 s later: %d, want 200", status)
			}
		})

		t.Run("pagination", func(t *testing.T) {
			srv := apitest.Start(t, apitest.WithProfile(profile))
			for i := range 120 {
				srv.NewProvider(fmt.Sprintf("Provider %03d", i))
			}
			want := map[string]int{"/": 50, "/?page=2": 50, "/?page=3": 20}
			for path, cards := range want {
				status, body, _ := getPage(t, srv, "127.0.0.1", path)
				if status != 200 || strings.Count(body, "data-provider=") != cards || !strings.Contains(body, `id="stat-providers">120<`) {
					t.Fatalf("%s: %d with %d providers, want %d of 120", path, status, strings.Count(body, "data-provider="), cards)
				}
			}
			if _, body, _ := getPage(t, srv, "127.0.0.1", "/"); !strings.Contains(body, `href="?page=2"`) {
				t.Fatal("page 1 does not link to page 2")
			}
			for path, status := range map[string]int{"/?page=4": 404, "/?page=0": 400, "/?page=x": 400} {
				if got, _, _ := getPage(t, srv, "127.0.0.1", path); got != status {
					t.Fatalf("%s: %d, want %d", path, got, status)
				}
			}
		})
	})
}

// TestDashboardListsEveryAgent (issue 18): a provider with several agents
// shows one row per agent, online or not, with its provisioner and active
// contracts; the card's count agrees.
func TestDashboardListsEveryAgent(t *testing.T) {
	ctx := context.Background()
	srv := apitest.Start(t)
	p := srv.NewProvider("Three Agent Hosting")
	now := srv.Now()
	want := map[string]string{}
	for i, ago := range []time.Duration{5 * time.Second, 20 * time.Second, 17 * time.Minute} {
		agent := identity.PublicHex(srv.NewAgent(p))
		hb := dcapi.Heartbeat{Version: "1.0", ProvisionerType: "proxmox", ActiveContracts: 10 + i}
		if err := srv.Store.RecordHeartbeat(ctx, p.Pubkey, agent, hb, now.Add(-ago).UnixNano()); err != nil {
			t.Fatal(err)
		}
		want[agent[:8]] = map[bool]string{true: "online", false: "offline"}[ago < 5*time.Minute]
	}
	_, body, _ := getPage(t, srv, "127.0.0.1", "/")
	if !strings.Contains(body, "2 / 3") {
		t.Errorf("the card does not count 2 of 3 agents online")
	}
	for short, state := range want {
		i := strings.Index(body, `data-agent="`+short+`"`)
		if i < 0 {
			t.Errorf("agent %s is not listed", short)
			continue
		}
		row := body[i : i+strings.Index(body[i:], "</tr>")]
		if !strings.Contains(row, `class="pill `+state+`"`) || !strings.Contains(row, "proxmox") {
			t.Errorf("agent %s: row %q, want %s", short, row, state)
		}
	}
}
