package vultr

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/vultr/govultr/v3"

	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// builtinCities maps datacenter cities (as offerings name them) to Vultr
// regions; [provisioner.vultr.regions] entries take precedence.
var builtinCities = map[string]string{
	"new jersey":     "ewr",
	"new york":       "ewr",
	"chicago":        "ord",
	"dallas":         "dfw",
	"seattle":        "sea",
	"los angeles":    "lax",
	"atlanta":        "atl",
	"miami":          "mia",
	"silicon valley": "sjc",
	"toronto":        "yto",
	"amsterdam":      "ams",
	"london":         "lhr",
	"frankfurt":      "fra",
	"paris":          "cdg",
	"warsaw":         "waw",
	"madrid":         "mad",
	"stockholm":      "sto",
	"tokyo":          "nrt",
	"osaka":          "itm",
	"seoul":          "icn",
	"singapore":      "sgp",
	"mumbai":         "bom",
	"sydney":         "syd",
	"melbourne":      "mel",
	"são paulo":      "sao",
	"sao paulo":      "sao",
}

func chooseRegion(req provisioners.Request, table map[string]string, def string) (region, why string) {
	return cloudkit.ChooseRegion(req, "region", table, builtinCities, def)
}

// fits reports whether plan p, one without a GPU, meets n.
func fits(n cloudkit.Need, p govultr.Plan) bool {
	return p.GPUType == "" && n.Fits(p.VCPUCount, int64(p.RAM), int64(p.Disk))
}

func offeredIn(p govultr.Plan, region string) bool {
	for _, l := range p.Locations {
		if l == region {
			return true
		}
	}
	return false
}

// pickPlan returns the cheapest plan (then least memory, vCPUs, disk; then
// by id) that fits n, is offered in region and in stock there (inStock).
// Fitting plans offered there but out of stock make a retryable error, no
// fitting plan offered there a permanent one.
func pickPlan(plans []govultr.Plan, inStock map[string]bool, n cloudkit.Need, planType, region string) (govultr.Plan, error) {
	best, sold, ok := cloudkit.Pick(plans, func(p govultr.Plan) bool { return p.Type == planType && fits(n, p) && offeredIn(p, region) },
		func(p govultr.Plan) bool { return inStock[p.ID] },
		func(a, b govultr.Plan) int {
			return cmp.Or(cmp.Compare(a.MonthlyCost, b.MonthlyCost), cmp.Compare(a.RAM, b.RAM), cmp.Compare(a.VCPUCount, b.VCPUCount),
				cmp.Compare(a.Disk, b.Disk), cmp.Compare(a.ID, b.ID))
		}, planID)
	switch {
	case ok:
		return best, nil
	case len(sold) > 0:
		return govultr.Plan{}, provisioners.Retryable(fmt.Errorf("no plan for %s is in stock in region %s right now (fitting but sold out: %s); Vultr capacity, will retry",
			n, region, strings.Join(sold, ", ")))
	}
	return govultr.Plan{}, provisioners.Permanent(fmt.Errorf("no Vultr %s plan offered in region %s fits %s; map the offering to a plan in [provisioner.vultr.plans], choose another plan_type, or change the offering", planType, region, n))
}

func planID(p govultr.Plan) string { return p.ID }

// checkNamedPlan validates an explicitly chosen plan for region.
func checkNamedPlan(plans []govultr.Plan, inStock map[string]bool, id, from, region string) (govultr.Plan, error) {
	p, valid, ok := cloudkit.Named(plans, planID, id)
	switch {
	case !ok:
		return govultr.Plan{}, provisioners.Permanent(fmt.Errorf("plan %q (from %s) does not exist on Vultr; valid plans: %s", id, from, valid))
	case !offeredIn(p, region):
		return govultr.Plan{}, provisioners.Permanent(fmt.Errorf("plan %s (from %s) is not offered in region %s (it is in: %s); choose another plan or region", id, from, region, strings.Join(p.Locations, ", ")))
	case !inStock[p.ID]:
		return govultr.Plan{}, provisioners.Retryable(fmt.Errorf("plan %s (from %s) is sold out in region %s right now; will retry, or map the offering to another plan or region", id, from, region))
	}
	return p, nil
}
