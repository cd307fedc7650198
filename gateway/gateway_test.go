package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// rustAllocations is a port-allocations.json as the Rust agent writes it
// (serde_json::to_string_pretty of PortAllocations), one entry without
// internal_ip (its oldest format).
var rustAllocations = `{
  "allocations": {
    "k7m2p4": {
      "base": 20000,
      "count": 10,
      "contract_id": "` + contractID(1) + `",
      "internal_ip": "10.0.1.5"
    },
    "a1b2c3": {
      "base": 20010,
      "count": 10,
      "contract_id": "` + contractID(2) + `"
    }
  }
}`

func TestParseJournalReadsTheRustAgentsFile(t *testing.T) {
	recs, err := parseJournal([]byte(rustAllocations))
	if err != nil {
		t.Fatal(err)
	}
	r := recs["k7m2p4"]
	if r == nil || r.Base != 20000 || r.Count != 10 || r.ContractID != contractID(1) || r.InternalIP != "10.0.1.5" || r.State != stateDNS || r.slug != "k7m2p4" {
		t.Fatalf("k7m2p4: %+v", r)
	}
	if r := recs["a1b2c3"]; r == nil || r.InternalIP != "" || r.State != stateDNS {
		t.Fatalf("a1b2c3: %+v", r)
	}
}

func TestParseJournalRefuses(t *testing.T) {
	rec := func(slug, body string) string { return `{"allocations":{"` + slug + `":{` + body + `}}}` }
	ok := `"base":20000,"count":10,"contract_id":"` + contractID(1) + `"`
	for name, c := range map[string]struct{ in, want string }{
		"not json":       {`{"allocations":`, "not the allocation JSON"},
		"trailing":       {rec("aaaaaa", ok) + `{}`, "trailing data"},
		"slug":           {rec("AAAAAA", ok), "slug"},
		"short slug":     {rec("abc", ok), "slug"},
		"null entry":     {`{"allocations":{"aaaaaa":null}}`, "no allocation"},
		"port block":     {rec("aaaaaa", `"base":65530,"count":10,"contract_id":"`+contractID(1)+`"`), "not a port block"},
		"zero count":     {rec("aaaaaa", `"base":20000,"count":0,"contract_id":"`+contractID(1)+`"`), "not a port block"},
		"contract":       {rec("aaaaaa", `"base":20000,"count":10,"contract_id":"c-1"`), "contract id"},
		"ip":             {rec("aaaaaa", ok+`,"internal_ip":"10.0.1"`), "internal_ip"},
		"ipv6":           {rec("aaaaaa", ok+`,"internal_ip":"fd00::1"`), "internal_ip"},
		"state":          {rec("aaaaaa", ok+`,"state":"done"`), "unknown state"},
		"subdomain":      {rec("aaaaaa", ok+`,"subdomain":"a}\n"`), "subdomain"},
		"same contract":  {`{"allocations":{"aaaaaa":{` + ok + `},"bbbbbb":{"base":20010,"count":10,"contract_id":"` + contractID(1) + `"}}}`, "two allocations"},
		"overlap":        {`{"allocations":{"aaaaaa":{` + ok + `},"bbbbbb":{"base":20005,"count":10,"contract_id":"` + contractID(2) + `"}}}`, "share ports"},
		"wrong type":     {rec("aaaaaa", `"base":"20000","count":10,"contract_id":"`+contractID(1)+`"`), "not the allocation JSON"},
		"allocations []": {`{"allocations":[]}`, "not the allocation JSON"},
	} {
		if _, err := parseJournal([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, c.want)
		}
	}
	for _, in := range []string{`{}`, `{"allocations":null}`, `{"allocations":{}}`} {
		if recs, err := parseJournal([]byte(in)); err != nil || len(recs) != 0 {
			t.Errorf("%s: %v %v", in, recs, err)
		}
	}
}

func TestFreeBase(t *testing.T) {
	j := func(blocks ...[2]int) *journal {
		jj := &journal{bySlug: map[string]*record{}}
		for i, b := range blocks {
			slug := string(rune('a'+i)) + "aaaaa"
			jj.bySlug[slug] = &record{slug: slug, Base: b[0], Count: b[1]}
		}
		return jj
	}
	for name, c := range map[string]struct {
		j          *journal
		start, end int
		per, want  int
		err        string
	}{
		"empty":               {j(), 20000, 59999, 10, 20000, ""},
		"after one":           {j([2]int{20000, 10}), 20000, 59999, 10, 20010, ""},
		"gap":                 {j([2]int{20000, 10}, [2]int{20020, 10}), 20000, 59999, 10, 20010, ""},
		"unsorted":            {j([2]int{20020, 10}, [2]int{20000, 10}, [2]int{20010, 10}), 20000, 59999, 10, 20030, ""},
		"last block included": {j([2]int{20000, 10}), 20000, 20019, 10, 20010, ""},
		"full":                {j([2]int{20000, 10}, [2]int{20010, 10}), 20000, 20019, 10, 0, "no free block of 10 ports left in 20000-20019 (2 VMs hold blocks)"},
		"too small":           {j(), 20000, 20008, 10, 0, "no free block"},
		// ports_per_vm changed from 10 to 4: the old blocks stay, the new
		// ones fit on the new grid around them.
		"old layout":       {j([2]int{20000, 10}), 20000, 59999, 4, 20012, ""},
		"odd block":        {j([2]int{20003, 2}), 20000, 59999, 4, 20008, ""},
		"below the range":  {j([2]int{10000, 10}), 20000, 59999, 10, 20000, ""},
		"straddling start": {j([2]int{19995, 10}), 20000, 59999, 10, 20010, ""},
	} {
		got, err := c.j.freeBase(c.start, c.end, c.per)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %d %v, want error %q", name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %d %v, want %d", name, got, err, c.want)
		}
	}
}

func TestJournalSaveLoadAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "port-allocations.json")
	j, err := openJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &record{slug: j.newSlug(), Base: 20000, Count: 10, ContractID: contractID(7), InternalIP: "10.0.0.7", State: stateActive, Subdomain: "x"}
	r.Subdomain = r.slug + ".dc-lk.gw.decent-cloud.org"
	j.put(r)
	if err := j.save(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("journal file %v %v: want mode 0600", st, err)
	}
	// A second agent on the same file is refused.
	if _, err := openJournal(path); err == nil || !strings.Contains(err.Error(), "in use by another dc-agent") {
		t.Fatalf("second open: %v", err)
	}
	j.close()
	j2, err := openJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.close()
	got := j2.byContract[contractID(7)]
	if !got.UpdatedAt.Equal(r.UpdatedAt) {
		t.Fatalf("updated_at %v, want %v", got.UpdatedAt, r.UpdatedAt)
	}
	got.UpdatedAt = r.UpdatedAt
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("reloaded %+v, want %+v", got, r)
	}
	// A corrupt file stops the gateway with the path and the way out.
	if err := os.WriteFile(path, []byte(`{"allocations":{"x":{}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	j2.close()
	if _, err := openJournal(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "fix or remove that entry") {
		t.Fatalf("corrupt file: %v", err)
	}
}

func TestNewSlug(t *testing.T) {
	j := &journal{bySlug: map[string]*record{}}
	seen := map[string]bool{}
	for range 2000 {
		s := j.newSlug()
		if err := checkSlug(s); err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("slug %s drawn twice", s)
		}
		seen[s] = true
		j.bySlug[s] = &record{slug: s}
	}
}

func TestCheckSubdomain(t *testing.T) {
	zone := "dc-lk.gw.decent-cloud.org"
	if err := CheckSubdomain("k7m2p4."+zone, "k7m2p4", zone); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ name, want string }{
		"dev server":   {"k7m2p4.dc-lk.dev-gw.decent-cloud.org", `set [gateway] gw_prefix = "dev-gw" and domain = "decent-cloud.org"`},
		"other slug":   {"aaaaaa." + zone, "not a name under " + zone},
		"other dc":     {"k7m2p4.dc-xx.gw.decent-cloud.org", "not a name under"},
		"injection":    {"k7m2p4." + zone + " {\n", "not a lowercase DNS name"},
		"upper":        {"K7M2P4." + zone, "not a lowercase DNS name"},
		"empty":        {"", "not a DNS name"},
		"empty label":  {"k7m2p4.." + zone, "not a lowercase DNS name"},
		"hyphen label": {"k7m2p4.-a." + zone, "not a lowercase DNS name"},
		"long":         {strings.Repeat("a", 300), "not a DNS name"},
	} {
		if err := CheckSubdomain(c.name, "k7m2p4", zone); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestForwards(t *testing.T) {
	got := Assignment{PortStart: 20000, PortEnd: 20002}.Forwards()
	want := []Forward{{"tcp", 20000, 22}, {"tcp", 20001, 10001}, {"udp", 20001, 10001}, {"tcp", 20002, 10002}, {"udp", 20002, 10002}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("forwards %v, want %v", got, want)
	}
	// The Rust agent's map for 10 ports (20001-20004 TCP, 20005-20009 UDP
	// to 10001-10009) is a subset.
	all := map[Forward]bool{}
	for _, f := range forwards(20000, 10) {
		all[f] = true
	}
	for i := 1; i <= 9; i++ {
		proto := "tcp"
		if i >= 5 {
			proto = "udp"
		}
		if !all[Forward{proto, 20000 + i, 10000 + i}] {
			t.Errorf("the Rust agent's %s %d → %d is missing", proto, 20000+i, 10000+i)
		}
	}
	if v := dnatValue(netip.MustParseAddr("10.0.0.2"), 22); !reflect.DeepEqual(v, []byte{10, 0, 0, 2, 0, 22, 0, 0}) {
		t.Fatalf("map value %v: address then the port padded to a register", v)
	}
}

func TestSiteFileAndCaddyfile(t *testing.T) {
	s := string(siteFile(site{Slug: "k7m2p4", Subdomain: "k7m2p4.dc-lk.gw.decent-cloud.org", ContractID: contractID(1), InternalIP: "10.0.1.5", Base: 20000, Count: 10}))
	for _, want := range []string{"@k7m2p4 host k7m2p4.dc-lk.gw.decent-cloud.org\n", "handle @k7m2p4 {\n\treverse_proxy 10.0.1.5:80\n}\n", "ports 20000-20009", contractID(1)} {
		if !strings.Contains(s, want) {
			t.Errorf("site file lacks %q:\n%s", want, s)
		}
	}
	cfg := config.GatewayConfig{DCID: "dc-lk", PublicIP: "198.51.100.7"}
	cf := Caddyfile(cfg, TLSAcmeDNS, "/var/lib/caddy")
	for _, want := range []string{"admin localhost:2019", "*.dc-lk.gw.decent-cloud.org {", "dns acmedns {", "{$ACME_DNS_PASSWORD}", "import /etc/caddy/sites/*.caddy", "root /var/lib/caddy"} {
		if !strings.Contains(string(cf), want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, cf)
		}
	}
	if !importsDir(cf, "/etc/caddy/sites") || importsDir(cf, "/etc/caddy/other") || importsDir([]byte("# import /etc/caddy/sites/*.caddy"), "/etc/caddy/sites") {
		t.Error("importsDir")
	}
	if strings.Contains(string(Caddyfile(cfg, TLSInternal, "/x")), "acmedns") {
		t.Error("tls internal with acme-dns")
	}

	reg := dcapi.GatewayRegistration{AcmeDNSServerURL: "https://api.decent-cloud.org/api/v1/acme-dns", AcmeDNSUsername: "u-1", AcmeDNSPassword: "p_w-1", AcmeDNSSubdomain: "u-1"}
	env, err := CaddyEnv(reg)
	if err != nil || string(env) != "ACME_DNS_SERVER_URL=https://api.decent-cloud.org/api/v1/acme-dns\nACME_DNS_USERNAME=u-1\nACME_DNS_PASSWORD=p_w-1\nACME_DNS_SUBDOMAIN=u-1\n" {
		t.Fatalf("env %q %v", env, err)
	}
	reg.AcmeDNSPassword = "x\nEVIL=1"
	if _, err := CaddyEnv(reg); err == nil {
		t.Fatal("a newline in a credential must be refused")
	}
	if s := reg.String(); strings.Contains(s, "EVIL") {
		t.Fatalf("String shows the password: %s", s)
	}
}

// A Caddy that is not running holds no routes (it reads the files when it
// starts): no error. A Caddy that refuses the config: its reason.
func TestCaddyReload(t *testing.T) {
	dir := t.TempDir()
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte("*.dc.gw.decent-cloud.org {\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	down := newCaddySites(slog.New(slog.DiscardHandler), dir, cf, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)))
	if err := down.reload(ctx); err != nil {
		t.Fatalf("Caddy not running: %v", err)
	}
	var gotType, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotType, gotBody = r.Header.Get("Content-Type"), string(b)
		http.Error(w, `{"error":"adapting config using caddyfile: unrecognized directive: bogus"}`, http.StatusBadRequest)
	}))
	defer srv.Close()
	up := newCaddySites(slog.New(slog.DiscardHandler), dir, cf, strings.TrimPrefix(srv.URL, "http://"))
	err := up.reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "unrecognized directive: bogus") {
		t.Fatalf("refused reload: %v", err)
	}
	if gotType != "text/caddyfile" || gotBody != "*.dc.gw.decent-cloud.org {\n}\n" {
		t.Fatalf("posted %q %q", gotType, gotBody)
	}
	if err := os.Remove(cf); err != nil {
		t.Fatal(err)
	}
	if err := up.reload(ctx); err == nil || !strings.Contains(err.Error(), "set gateway.caddyfile") {
		t.Fatalf("missing Caddyfile: %v", err)
	}
}
