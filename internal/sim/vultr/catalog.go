package vultrsim

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/google/uuid"
	"github.com/vultr/govultr/v3"
)

// DefaultRegions is the region catalogue the simulator starts with (ids and
// cities as GET /v2/regions lists them).
func DefaultRegions() []govultr.Region {
	mk := func(id, city, country, continent string) govultr.Region {
		return govultr.Region{ID: id, City: city, Country: country, Continent: continent, Options: []string{"ddos_protection", "block_storage_high_perf"}, Connectivity: []string{}}
	}
	return []govultr.Region{
		mk("ewr", "New Jersey", "US", "North America"), mk("ord", "Chicago", "US", "North America"),
		mk("dfw", "Dallas", "US", "North America"), mk("sea", "Seattle", "US", "North America"),
		mk("lax", "Los Angeles", "US", "North America"), mk("atl", "Atlanta", "US", "North America"),
		mk("ams", "Amsterdam", "NL", "Europe"), mk("lhr", "London", "GB", "Europe"),
		mk("fra", "Frankfurt", "DE", "Europe"), mk("cdg", "Paris", "FR", "Europe"),
		mk("nrt", "Tokyo", "JP", "Asia"), mk("sgp", "Singapore", "SG", "Asia"), mk("syd", "Sydney", "AU", "Australia"),
	}
}

// DefaultPlans is the plan catalogue (a part of the real one: regular and
// high-frequency cloud compute; ram in MB, disk in GB). High frequency is
// not offered in every region, as on the real API.
func DefaultPlans() []govultr.Plan {
	var all, some []string
	for _, r := range DefaultRegions() {
		all = append(all, r.ID)
		if r.Continent != "Australia" && r.ID != "sgp" {
			some = append(some, r.ID)
		}
	}
	mk := func(id, typ string, vcpu, ramMB, diskGB, bw int, monthly float32, locs []string) govultr.Plan {
		return govultr.Plan{ID: id, VCPUCount: vcpu, RAM: ramMB, Disk: diskGB, DiskCount: 1, Bandwidth: bw, MonthlyCost: monthly, Type: typ, Locations: append([]string(nil), locs...)}
	}
	return []govultr.Plan{
		mk("vc2-1c-0.5gb", "vc2", 1, 512, 10, 500, 2.5, all),
		mk("vc2-1c-1gb", "vc2", 1, 1024, 25, 1024, 5, all),
		mk("vc2-1c-2gb", "vc2", 1, 2048, 55, 2048, 10, all),
		mk("vc2-2c-4gb", "vc2", 2, 4096, 80, 3072, 20, all),
		mk("vc2-4c-8gb", "vc2", 4, 8192, 160, 4096, 40, all),
		mk("vc2-6c-16gb", "vc2", 6, 16384, 320, 5120, 80, all),
		mk("vhf-1c-1gb", "vhf", 1, 1024, 32, 1024, 6, some),
		mk("vhf-2c-4gb", "vhf", 2, 4096, 128, 3072, 24, some),
	}
}

// DefaultOS is the operating system catalogue.
func DefaultOS() []govultr.OS {
	return []govultr.OS{
		{ID: 2284, Name: "Ubuntu 24.04 LTS x64", Arch: "x64", Family: "ubuntu"},
		{ID: 1743, Name: "Ubuntu 22.04 LTS x64", Arch: "x64", Family: "ubuntu"},
		{ID: 2136, Name: "Debian 12 x64 (bookworm)", Arch: "x64", Family: "debian"},
	}
}

func newID() string { return uuid.NewString() }

func randomPassword() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "Vu" + base64.RawURLEncoding.EncodeToString(b)
}
