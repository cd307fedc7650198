package hcloudsim

import (
	"regexp"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
)

// Label rules of the Hetzner API (the same expressions hcloud-go validates with).
var (
	labelKeyRe   = regexp.MustCompile(`^([a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,253}[a-z0-9A-Z])?/)?[a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]|){0,61}[a-z0-9A-Z])?$`)
	labelValueRe = regexp.MustCompile(`^(([a-z0-9A-Z](?:[\-_.]|[a-z0-9A-Z]){0,61})?[a-z0-9A-Z]$|$)`)
	// A server name must be a valid hostname (RFC 1123), at most 63 characters.
	serverNameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
)

func validLabelKey(k string) bool   { return labelKeyRe.MatchString(k) }
func validLabelValue(v string) bool { return labelValueRe.MatchString(v) }

// DefaultLocations is the location catalogue the simulator starts with
// (shape and values as GET /locations returns them).
func DefaultLocations() []schema.Location {
	return []schema.Location{
		{ID: 1, Name: "fsn1", Description: "Falkenstein DC Park 1", Country: "DE", City: "Falkenstein", Latitude: 50.47612, Longitude: 12.370071, NetworkZone: "eu-central"},
		{ID: 2, Name: "nbg1", Description: "Nuremberg DC Park 1", Country: "DE", City: "Nuremberg", Latitude: 49.452102, Longitude: 11.076665, NetworkZone: "eu-central"},
		{ID: 3, Name: "hel1", Description: "Helsinki DC Park 1", Country: "FI", City: "Helsinki", Latitude: 60.169855, Longitude: 24.938379, NetworkZone: "eu-central"},
		{ID: 4, Name: "ash", Description: "Ashburn, VA", Country: "US", City: "Ashburn, VA", Latitude: 39.045821, Longitude: -77.487073, NetworkZone: "us-east"},
		{ID: 5, Name: "hil", Description: "Hillsboro, OR", Country: "US", City: "Hillsboro, OR", Latitude: 45.54222, Longitude: -122.95128, NetworkZone: "us-west"},
		{ID: 6, Name: "sin", Description: "Singapore", Country: "SG", City: "Singapore", Latitude: 1.283333, Longitude: 103.833333, NetworkZone: "ap-southeast"},
	}
}

// DefaultServerTypes is the server type catalogue the simulator starts with.
// Memory is in GB and disk in GB, as the API reports them. The US and
// Singapore locations only offer the cpx/ccx lines, as on the real API.
func DefaultServerTypes() []schema.ServerType {
	eu := []string{"fsn1", "nbg1", "hel1"}
	all := []string{"fsn1", "nbg1", "hel1", "ash", "hil", "sin"}
	mk := func(id int64, name, cpuType, arch string, cores int, mem float32, disk int, hourly string, locs []string) schema.ServerType {
		st := schema.ServerType{
			ID: id, Name: name, Description: name, Category: "shared_vcpu", Cores: cores, Memory: mem, Disk: disk,
			StorageType: "local", CPUType: cpuType, Architecture: arch,
		}
		if cpuType == "dedicated" {
			st.Category = "dedicated_vcpu"
		}
		for _, l := range locs {
			loc := locationByName(l)
			st.Locations = append(st.Locations, schema.ServerTypeLocation{ID: loc.ID, Name: l, Available: true, Recommended: true})
			st.Prices = append(st.Prices, schema.PricingServerTypePrice{
				Location:        l,
				PriceHourly:     schema.Price{Net: hourly, Gross: hourly},
				PriceMonthly:    schema.Price{Net: hourly, Gross: hourly},
				IncludedTraffic: 20 << 40,
			})
		}
		return st
	}
	return []schema.ServerType{
		mk(101, "cx23", "shared", "x86", 2, 4, 40, "0.0060", eu),
		mk(102, "cx33", "shared", "x86", 4, 8, 80, "0.0096", eu),
		mk(103, "cx43", "shared", "x86", 8, 16, 160, "0.0176", eu),
		mk(104, "cx53", "shared", "x86", 16, 32, 320, "0.0336", eu),
		mk(111, "cax11", "shared", "arm", 2, 4, 40, "0.0064", eu),
		mk(112, "cax21", "shared", "arm", 4, 8, 80, "0.0112", eu),
		mk(121, "cpx12", "shared", "x86", 1, 2, 40, "0.0080", all),
		mk(122, "cpx22", "shared", "x86", 2, 4, 80, "0.0128", all),
		mk(123, "cpx32", "shared", "x86", 4, 8, 160, "0.0224", all),
		mk(131, "ccx13", "dedicated", "x86", 2, 8, 80, "0.0233", all),
		mk(132, "ccx23", "dedicated", "x86", 4, 16, 160, "0.0465", all),
	}
}

func locationByName(name string) schema.Location {
	for _, l := range DefaultLocations() {
		if l.Name == name {
			return l
		}
	}
	return schema.Location{Name: name}
}

// DefaultImages is the system image catalogue (both architectures).
func DefaultImages() []schema.Image {
	str := func(s string) *string { return &s }
	var out []schema.Image
	id := int64(161000)
	for _, img := range []struct{ name, flavor, ver string }{
		{"ubuntu-24.04", "ubuntu", "24.04"}, {"ubuntu-22.04", "ubuntu", "22.04"},
		{"debian-12", "debian", "12"}, {"debian-13", "debian", "13"},
	} {
		for _, arch := range []string{"x86", "arm"} {
			id++
			out = append(out, schema.Image{
				ID: id, Status: "available", Type: "system", Name: str(img.name), Description: img.flavor + " " + img.ver,
				DiskSize: 5, OSFlavor: img.flavor, OSVersion: str(img.ver), Architecture: arch, RapidDeploy: true,
				Labels: map[string]string{},
			})
		}
	}
	return out
}
