package hetzner

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
)

// builtinCities maps datacenter cities (as offerings name them) to Hetzner
// locations; [provisioner.hetzner.locations] entries take precedence.
var builtinCities = map[string]string{
	"falkenstein": "fsn1",
	"nuremberg":   "nbg1",
	"nürnberg":    "nbg1",
	"nurnberg":    "nbg1",
	"helsinki":    "hel1",
	"ashburn":     "ash",
	"hillsboro":   "hil",
	"singapore":   "sin",
}

// chooseLocation picks the location: the offering's own "location"
// setting, else the datacenter city through the configured table and then
// the built-in one, else the default.
func chooseLocation(req provisioners.Request, table map[string]string, def string) (loc, why string) {
	return cloudkit.ChooseRegion(req, "location", table, builtinCities, def)
}

// typeLocation returns the entry of st for location loc (nil if the type
// is not offered there).
func typeLocation(st *hcloud.ServerType, loc string) *hcloud.ServerTypeLocation {
	for i := range st.Locations {
		if st.Locations[i].Location != nil && st.Locations[i].Location.Name == loc {
			return &st.Locations[i]
		}
	}
	return nil
}

// usableIn reports whether st can be ordered in loc now.
func usableIn(st *hcloud.ServerType, loc string) (offered, available bool) {
	tl := typeLocation(st, loc)
	if tl == nil {
		return false, false
	}
	return true, tl.Available && tl.Deprecation == nil
}

// hourlyPrice is the gross hourly price in loc (+Inf when unknown), used
// only to break ties between equally sized types.
func hourlyPrice(st *hcloud.ServerType, loc string) float64 {
	for _, p := range st.Pricings {
		if p.Location != nil && p.Location.Name == loc {
			if f, err := strconv.ParseFloat(p.Hourly.Gross, 64); err == nil {
				return f
			}
		}
	}
	return math.Inf(1)
}

// need is what an offering asks for.
type need struct {
	cores   int
	memMB   int64
	diskGB  int64
	arch    string
	cpuType string // "" any, "shared", "dedicated"
}

func (n need) String() string {
	s := fmt.Sprintf("%d cores, %d MB memory, %d GB disk, %s", n.cores, n.memMB, n.diskGB, n.arch)
	if n.cpuType != "" {
		s += ", " + n.cpuType + " vCPU"
	}
	return s
}

func (n need) fits(st *hcloud.ServerType) bool {
	if string(st.Architecture) != n.arch || (n.cpuType != "" && string(st.CPUType) != n.cpuType) {
		return false
	}
	if st.Deprecation != nil {
		return false
	}
	return st.Cores >= n.cores && int64(math.Round(float64(st.Memory)*1024)) >= n.memMB && int64(st.Disk) >= n.diskGB
}

// pickServerType returns the smallest type (memory, then cores, disk,
// price, name) that fits n and can be ordered in loc. The error says
// whether nothing fits at all (permanent: the offering is bigger than any
// Hetzner type) or only unavailable types fit (retryable: capacity).
func pickServerType(types []*hcloud.ServerType, n need, loc string) (*hcloud.ServerType, error) {
	best, unavailable, ok := cloudkit.Pick(types, func(st *hcloud.ServerType) bool {
		offered, _ := usableIn(st, loc)
		return n.fits(st) && offered
	}, func(st *hcloud.ServerType) bool {
		_, avail := usableIn(st, loc)
		return avail
	}, func(a, b *hcloud.ServerType) int {
		return cmp.Or(cmp.Compare(a.Memory, b.Memory), cmp.Compare(a.Cores, b.Cores), cmp.Compare(a.Disk, b.Disk),
			cmp.Compare(hourlyPrice(a, loc), hourlyPrice(b, loc)), cmp.Compare(a.Name, b.Name))
	}, typeName)
	switch {
	case ok:
		return best, nil
	case len(unavailable) > 0:
		return nil, provisioners.Retryable(fmt.Errorf("no server type for %s is available in location %s right now (fitting but unavailable: %s); Hetzner capacity, will retry",
			n, loc, strings.Join(unavailable, ", ")))
	}
	return nil, provisioners.Permanent(fmt.Errorf("no Hetzner server type offered in location %s fits %s; map the offering to a server type in [provisioner.hetzner.server_types] or change the offering", loc, n))
}

func typeName(st *hcloud.ServerType) string { return st.Name }

// checkNamedType validates an explicitly chosen server type for loc.
func checkNamedType(types []*hcloud.ServerType, name, from, loc string) (*hcloud.ServerType, error) {
	st, valid, ok := cloudkit.Named(types, typeName, name)
	if !ok {
		return nil, provisioners.Permanent(fmt.Errorf("server type %q (from %s) does not exist on Hetzner; valid types: %s", name, from, valid))
	}
	switch offered, avail := usableIn(st, loc); {
	case !offered:
		return nil, provisioners.Permanent(fmt.Errorf("server type %s (from %s) is not offered in location %s; choose another type or location", name, from, loc))
	case !avail:
		return nil, provisioners.Retryable(fmt.Errorf("server type %s is currently unavailable in location %s (Hetzner capacity or deprecation); will retry, or map the offering to another type or location", name, loc))
	}
	return st, nil
}
