package gateway

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseJournal: the allocation file is read at every start and may have
// been edited by hand. It must never panic, and what it accepts is safe to
// use: valid slugs, contract ids, addresses and names, no shared ports.
func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(rustAllocations))
	f.Add([]byte(`{"allocations":{"aaaaaa":{"base":20000,"count":10,"contract_id":"` + contractID(1) + `","internal_ip":"10.0.0.2","state":"active","subdomain":"aaaaaa.dc.gw.decent-cloud.org"}}}`))
	f.Add([]byte(`{"allocations":{"aaaaaa":{"base":20000,"count":10,"contract_id":"` + contractID(1) + `"},"bbbbbb":{"base":20005,"count":10,"contract_id":"` + contractID(2) + `"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := parseJournal(data)
		if err != nil {
			return
		}
		used := map[int]string{}
		for slug, r := range recs {
			if checkSlug(slug) != nil || r.slug != slug || r.Count < 1 || r.end() > 65535 {
				t.Fatalf("accepted %q %+v", slug, r)
			}
			if r.Subdomain != "" && strings.ContainsAny(r.Subdomain, "{}\n \t\"#") {
				t.Fatalf("accepted subdomain %q", r.Subdomain)
			}
			for p := r.Base; p <= r.end(); p++ {
				if o, dup := used[p]; dup {
					t.Fatalf("port %d in %s and %s", p, o, slug)
				}
				used[p] = slug
			}
		}
	})
}

// FuzzParseHost: HostScript's output comes from a host (over SSH in setup).
func FuzzParseHost(f *testing.F) {
	if b, err := os.ReadFile("testdata/host-network.txt"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("[]\n#\n[]\n#\n0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHost(data)
		if err != nil {
			return
		}
		for _, ifc := range h.Ifaces {
			for _, a := range ifc.Addrs {
				if !a.IsValid() || !a.Addr().Is4() {
					t.Fatalf("accepted address %v", a)
				}
			}
		}
		h.PublicIPv4()
		h.PrivateBridges()
	})
}

// FuzzCheckSubdomain: the API's answer goes into Caddy's config when
// accepted, so nothing that could end a line or a block may pass.
func FuzzCheckSubdomain(f *testing.F) {
	f.Add("k7m2p4.dc-lk.gw.decent-cloud.org", "k7m2p4", "dc-lk.gw.decent-cloud.org")
	f.Add("k7m2p4.dc-lk.dev-gw.decent-cloud.org", "k7m2p4", "dc-lk.gw.decent-cloud.org")
	f.Fuzz(func(t *testing.T, name, slug, zone string) {
		if CheckSubdomain(name, slug, zone) != nil {
			return
		}
		if checkHostname(name) != nil || strings.ContainsAny(name, "{}\n\r \t\"#;") || name != slug+"."+zone {
			t.Fatalf("accepted %q for %q in %q", name, slug, zone)
		}
	})
}
