package provisioners

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// A contract's instance_config is chosen by the requester; the offering's
// provisioner_config by the provider. Backends read both from one merged
// map, and many keys there are the provider's to set (a static IP on the
// provider's bridge, the template to clone, the server type paid for), so
// instance_config may only set the keys a backend declares requester-settable,
// each value checked, plus those the provider lists in instance_config_allow.

// AnyKey, as a RequesterKey name or an instance_config_allow entry, lets a
// contract set every key (with any value).
const AnyKey = "*"

// RequesterKey is one instance_config key a contract may set.
type RequesterKey struct {
	Name string
	// Check validates the requester's value; nil accepts any value. Its
	// error says what is accepted (the requester reads it).
	Check func(v any) error
}

// RequesterSettable is implemented by backends that let a contract's
// instance_config set some keys. A backend that does not implement it lets
// a contract set none (beyond the provider's instance_config_allow).
type RequesterSettable interface {
	RequesterKeys() []RequesterKey
}

// ConfigPolicy says which instance_config keys a contract may set on one
// backend.
type ConfigPolicy struct {
	// Type names the backend in messages ("proxmox").
	Type string
	// Keys are the backend's own requester-settable keys, value-checked.
	Keys []RequesterKey
	// Allow are the provider's extra keys (instance_config_allow): any value.
	Allow []string
}

// PolicyFor is the policy of backend p, configured as typ with the
// provider's instance_config_allow list.
func PolicyFor(p Provisioner, typ string, allow []string) ConfigPolicy {
	pol := ConfigPolicy{Type: typ, Allow: allow}
	if rs, ok := p.(RequesterSettable); ok {
		pol.Keys = rs.RequesterKeys()
	}
	return pol
}

// check returns nil when a contract may set key to v.
func (pol ConfigPolicy) check(key string, v any) error {
	if slices.Contains(pol.Allow, key) || slices.Contains(pol.Allow, AnyKey) {
		return nil
	}
	for _, k := range pol.Keys {
		if k.Name != key && k.Name != AnyKey {
			continue
		}
		if k.Check == nil {
			return nil
		}
		if err := k.Check(v); err != nil {
			return fmt.Errorf("instance_config %q: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("instance_config sets %q, which a contract may not set on this provider's %s backend (%s); "+
		"the provider can allow it with instance_config_allow = [%q] in the backend's [provisioner] section of dc-agent.toml",
		key, pol.typeName(), pol.settable(), key)
}

func (pol ConfigPolicy) typeName() string {
	if pol.Type == "" {
		return "default"
	}
	return pol.Type
}

// settable describes what a contract may set, for messages.
func (pol ConfigPolicy) settable() string {
	var names []string
	for _, k := range pol.Keys {
		names = append(names, k.Name)
	}
	names = append(names, pol.Allow...)
	sort.Strings(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return "contracts may set no keys"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return "contracts may set: " + strings.Join(q, ", ")
}

// MergeConfig parses the offering's provisioner_config (trusted: the
// provider wrote it) and the contract's instance_config (the requester's:
// every top-level key must pass pol), and merges the second over the
// first, recursively for nested objects. Either may be empty or null. Every
// error is Permanent: retrying cannot change the contract's data.
func MergeConfig(provisionerConfig, instanceConfig string, pol ConfigPolicy) (map[string]any, error) {
	base, err := parseObject("provisioner_config", provisionerConfig)
	if err != nil {
		return nil, Permanent(err)
	}
	over, err := parseObject("instance_config", instanceConfig)
	if err != nil {
		return nil, Permanent(err)
	}
	keys := make([]string, 0, len(over))
	for k := range over {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same contract always names the same key
	for _, k := range keys {
		if err := pol.check(k, over[k]); err != nil {
			return nil, Permanent(err)
		}
	}
	out := map[string]any{}
	mergeInto(out, base)
	mergeInto(out, over)
	return out, nil
}

func parseObject(name, text string) (map[string]any, error) {
	t := strings.TrimSpace(text)
	if t == "" || t == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(t), &m); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object: %w", name, err)
	}
	return m, nil
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// OneOf is a Check accepting exactly one of the given strings.
func OneOf(values ...string) func(any) error {
	return func(v any) error {
		if s, ok := v.(string); ok && slices.Contains(values, s) {
			return nil
		}
		q := make([]string, len(values))
		for i, s := range values {
			q[i] = strconv.Quote(s)
		}
		return fmt.Errorf("%s is not accepted; use one of %s", ShortValue(v), strings.Join(q, ", "))
	}
}

// ShortValue renders a requester's value for a message: JSON, bounded.
func ShortValue(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "the value"
	}
	r := []rune(string(b))
	if len(r) > 60 {
		return "value " + string(r[:60]) + "…"
	}
	return "value " + string(r)
}
