package hcloudsim

import (
	"fmt"
	"strings"
)

// selector is a parsed Hetzner label selector: every requirement must hold.
type selector []requirement

type requirement struct {
	key    string
	op     string // "=", "!=", "exists", "!exists", "in", "notin"
	values []string
}

// parseSelector parses the label_selector query parameter as the Hetzner
// API documents it: comma-separated expressions `k=v`, `k==v`, `k!=v`, `k`,
// `!k`, `k in (a,b)`, `k notin (a,b)`; all must match.
func parseSelector(s string) (selector, error) {
	var out selector
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	for _, expr := range splitTopLevel(s) {
		expr = strings.TrimSpace(expr)
		if expr == "" {
			return nil, fmt.Errorf("empty expression in label selector %q", s)
		}
		r, err := parseRequirement(expr)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// splitTopLevel splits on commas outside parentheses.
func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(expr string) (requirement, error) {
	if k, ok := strings.CutPrefix(expr, "!"); ok {
		k = strings.TrimSpace(k)
		if !validLabelKey(k) {
			return requirement{}, fmt.Errorf("invalid label key %q in selector", k)
		}
		return requirement{key: k, op: "!exists"}, nil
	}
	for _, op := range []string{" notin ", " in "} {
		if i := strings.Index(expr, op); i >= 0 {
			k := strings.TrimSpace(expr[:i])
			rest := strings.TrimSpace(expr[i+len(op):])
			if !validLabelKey(k) {
				return requirement{}, fmt.Errorf("invalid label key %q in selector", k)
			}
			if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
				return requirement{}, fmt.Errorf("set in selector expression %q must be in parentheses", expr)
			}
			var vals []string
			for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
				v = strings.TrimSpace(v)
				if !validLabelValue(v) {
					return requirement{}, fmt.Errorf("invalid label value %q in selector", v)
				}
				vals = append(vals, v)
			}
			return requirement{key: k, op: strings.TrimSpace(op), values: vals}, nil
		}
	}
	for _, op := range []string{"!=", "==", "="} {
		if i := strings.Index(expr, op); i >= 0 {
			k := strings.TrimSpace(expr[:i])
			v := strings.TrimSpace(expr[i+len(op):])
			if !validLabelKey(k) {
				return requirement{}, fmt.Errorf("invalid label key %q in selector", k)
			}
			if !validLabelValue(v) {
				return requirement{}, fmt.Errorf("invalid label value %q in selector", v)
			}
			if op == "==" {
				op = "="
			}
			return requirement{key: k, op: op, values: []string{v}}, nil
		}
	}
	if !validLabelKey(expr) {
		return requirement{}, fmt.Errorf("invalid label key %q in selector", expr)
	}
	return requirement{key: expr, op: "exists"}, nil
}

func (sel selector) matches(labels map[string]string) bool {
	for _, r := range sel {
		v, has := labels[r.key]
		switch r.op {
		case "=":
			if !has || v != r.values[0] {
				return false
			}
		case "!=":
			if has && v == r.values[0] {
				return false
			}
		case "exists":
			if !has {
				return false
			}
		case "!exists":
			if has {
				return false
			}
		case "in":
			if !has || !contains(r.values, v) {
				return false
			}
		case "notin":
			if has && contains(r.values, v) {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
