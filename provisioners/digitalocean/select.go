package digitalocean

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/digitalocean/godo"

	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// builtinCities maps datacenter cities (as offerings name them) to
// DigitalOcean regions; [provisioner.digitalocean.regions] entries take
// precedence.
var builtinCities = map[string]string{
	"new york":      "nyc3",
	"san francisco": "sfo3",
	"amsterdam":     "ams3",
	"singapore":     "sgp1",
	"london":        "lon1",
	"frankfurt":     "fra1",
	"toronto":       "tor1",
	"bangalore":     "blr1",
	"bengaluru":     "blr1",
	"sydney":        "syd1",
	"atlanta":       "atl1",
}

func chooseRegion(req provisioners.Request, table map[string]string, def string) (region, why string) {
	return cloudkit.ChooseRegion(req, "region", table, builtinCities, def)
}

// fits reports whether size s, one without a GPU, meets n.
func fits(n cloudkit.Need, s godo.Size) bool {
	return s.GPUInfo == nil && n.Fits(s.Vcpus, int64(s.Memory), int64(s.Disk))
}

func inRegion(s godo.Size, region string) bool {
	if !s.Available {
		return false
	}
	for _, r := range s.Regions {
		if r == region {
			return true
		}
	}
	return false
}

// pickSize returns the cheapest size (then the one with least memory,
// vCPUs, disk; then by slug) that fits n and is available in region: size
// families differ in price more than in size. Fitting sizes that exist
// only elsewhere make a retryable error (DigitalOcean lists a size in the
// regions where it can be created now), no fitting size a permanent one.
func pickSize(sizes []godo.Size, n cloudkit.Need, region string) (godo.Size, error) {
	best, elsewhere, ok := cloudkit.Pick(sizes, func(s godo.Size) bool { return fits(n, s) }, func(s godo.Size) bool { return inRegion(s, region) },
		func(a, b godo.Size) int {
			return cmp.Or(cmp.Compare(a.PriceMonthly, b.PriceMonthly), cmp.Compare(a.Memory, b.Memory), cmp.Compare(a.Vcpus, b.Vcpus),
				cmp.Compare(a.Disk, b.Disk), cmp.Compare(a.Slug, b.Slug))
		}, slug)
	switch {
	case ok:
		return best, nil
	case len(elsewhere) > 0:
		return godo.Size{}, provisioners.Retryable(fmt.Errorf("no droplet size for %s is available in region %s right now (fitting sizes available elsewhere: %s); DigitalOcean capacity, will retry, or map the offering to another region",
			n, region, strings.Join(elsewhere, ", ")))
	}
	return godo.Size{}, provisioners.Permanent(fmt.Errorf("no DigitalOcean droplet size fits %s; map the offering to a size in [provisioner.digitalocean.sizes] or change the offering", n))
}

func slug(s godo.Size) string { return s.Slug }

// checkNamedSize validates an explicitly chosen size for region.
func checkNamedSize(sizes []godo.Size, name, from, region string) (godo.Size, error) {
	s, valid, ok := cloudkit.Named(sizes, slug, name)
	switch {
	case !ok:
		return godo.Size{}, provisioners.Permanent(fmt.Errorf("droplet size %q (from %s) does not exist on DigitalOcean; valid sizes: %s", name, from, valid))
	case !inRegion(s, region):
		return godo.Size{}, provisioners.Retryable(fmt.Errorf("droplet size %s (from %s) is not available in region %s right now (it is in: %s); will retry, or map the offering to another size or region",
			name, from, region, strings.Join(s.Regions, ", ")))
	}
	return s, nil
}
