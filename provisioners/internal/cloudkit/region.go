package cloudkit

import (
	"sort"
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// NormCity lowercases a city and drops a ", state/country" suffix, so
// "Ashburn, VA" and "ashburn" match.
func NormCity(c string) string {
	c = strings.ToLower(strings.TrimSpace(c))
	if i := strings.IndexByte(c, ','); i >= 0 {
		c = strings.TrimSpace(c[:i])
	}
	return c
}

// ChooseRegion picks where an instance goes: the offering's own setting
// (config key key, e.g. "location" or "region"), else the datacenter city
// through the configured table and then the built-in one, else def. why
// says which, for the log.
func ChooseRegion(req provisioners.Request, key string, table, builtin map[string]string, def string) (region, why string) {
	if l := req.ConfigString(key, ""); l != "" {
		return l, "offering config"
	}
	city := NormCity(req.DatacenterCity)
	if city == "" {
		return def, "default"
	}
	// Sorted, so that two table entries naming the same city ("Frankfurt"
	// and "frankfurt") always resolve the same way.
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if NormCity(k) == city {
			return table[k], "regions table (" + k + ")"
		}
	}
	if v, ok := builtin[city]; ok {
		return v, "built-in city table (" + req.DatacenterCity + ")"
	}
	return def, "default (city " + strconv.Quote(req.DatacenterCity) + " is not in the table)"
}
