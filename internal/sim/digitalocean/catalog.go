package dosim

import (
	"sort"

	"github.com/digitalocean/godo"
)

func sortStrings(s []string) { sort.Strings(s) }

func sortBy[T any](s []T, key func(T) int) {
	sort.Slice(s, func(i, j int) bool { return key(s[i]) < key(s[j]) })
}

var defaultRegionSlugs = []string{"nyc1", "nyc3", "sfo3", "ams3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1"}

// DefaultRegions is the region catalogue the simulator starts with (slugs
// and names as GET /v2/regions lists them).
func DefaultRegions() []godo.Region {
	names := map[string]string{
		"nyc1": "New York 1", "nyc3": "New York 3", "sfo3": "San Francisco 3", "ams3": "Amsterdam 3", "sgp1": "Singapore 1",
		"lon1": "London 1", "fra1": "Frankfurt 1", "tor1": "Toronto 1", "blr1": "Bangalore 1", "syd1": "Sydney 1", "atl1": "Atlanta 1",
	}
	var out []godo.Region
	for _, slug := range defaultRegionSlugs {
		var sizes []string
		for _, sz := range DefaultSizes() {
			for _, r := range sz.Regions {
				if r == slug {
					sizes = append(sizes, sz.Slug)
				}
			}
		}
		out = append(out, godo.Region{Slug: slug, Name: names[slug], Sizes: sizes, Available: true,
			Features: []string{"backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"}})
	}
	return out
}

// DefaultSizes is the size catalogue (a part of the real one: basic,
// general purpose and CPU-optimised droplets; memory in MB, disk in GB).
// The general purpose and CPU-optimised sizes are not offered in every
// region, as on the real API.
func DefaultSizes() []godo.Size {
	all := defaultRegionSlugs
	some := []string{"nyc1", "nyc3", "sfo3", "ams3", "lon1", "fra1", "tor1"}
	mk := func(slug string, vcpus, memMB, diskGB int, monthly float64, desc string, regions []string) godo.Size {
		return godo.Size{Slug: slug, Vcpus: vcpus, Memory: memMB, Disk: diskGB, PriceMonthly: monthly, PriceHourly: monthly / 744,
			Regions: append([]string(nil), regions...), Available: true, Transfer: float64(memMB) / 1024, Description: desc,
			DiskInfo: []godo.DiskInfo{{Type: "local", Size: &godo.DiskSize{Amount: diskGB, Unit: "gib"}}}}
	}
	return []godo.Size{
		mk("s-1vcpu-512mb-10gb", 1, 512, 10, 4, "Basic", all),
		mk("s-1vcpu-1gb", 1, 1024, 25, 6, "Basic", all),
		mk("s-1vcpu-2gb", 1, 2048, 50, 12, "Basic", all),
		mk("s-2vcpu-2gb", 2, 2048, 60, 18, "Basic", all),
		mk("s-2vcpu-4gb", 2, 4096, 80, 24, "Basic", all),
		mk("s-4vcpu-8gb", 4, 8192, 160, 48, "Basic", all),
		mk("s-8vcpu-16gb", 8, 16384, 320, 96, "Basic", all),
		mk("c-2", 2, 4096, 25, 42, "CPU-Optimized", some),
		mk("g-2vcpu-8gb", 2, 8192, 25, 63, "General Purpose", some),
		mk("c-4", 4, 8192, 50, 84, "CPU-Optimized", some),
		mk("g-4vcpu-16gb", 4, 16384, 50, 126, "General Purpose", some),
	}
}

// DefaultImages is the distribution image catalogue.
func DefaultImages() []godo.Image {
	mk := func(id int, slug, name, distro string, minDisk int) godo.Image {
		return godo.Image{ID: id, Name: name, Type: "base", Distribution: distro, Slug: slug, Public: true,
			Regions: append([]string(nil), defaultRegionSlugs...), MinDiskSize: minDisk, SizeGigaBytes: 2.4,
			Created: "2024-04-25T19:16:31Z", Description: name + " x64", Status: "available", Tags: []string{}}
	}
	return []godo.Image{
		mk(155000001, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu", 7),
		mk(155000002, "ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu", 7),
		mk(155000003, "debian-12-x64", "12 x64", "Debian", 15),
		mk(155000004, "debian-13-x64", "13 x64", "Debian", 15),
	}
}
