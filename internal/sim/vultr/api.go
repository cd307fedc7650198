package vultrsim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vultr/govultr/v3"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

const (
	maxUserData = 64 * 1024 // decoded user_data limit
	maxPerPage  = 500
)

// A hostname: letters, digits, dots and dashes.
var hostnameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$`)

// writeJSON sends a body with the Content-Type govultr requires verbatim.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg, "status": status})
}

func decodeUserData(b64 string) string {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return ""
	}
	return string(b)
}

// pageOf slices items by the per_page and cursor query and builds meta.
// The cursor is the base64 of the offset, opaque to clients.
func pageOf[T any](w http.ResponseWriter, r *http.Request, items []T) ([]T, *govultr.Meta, bool) {
	q := r.URL.Query()
	per, ok := simkit.QueryInt(q, "per_page", 100)
	if !ok {
		writeError(w, http.StatusBadRequest, "per_page must be a positive integer")
		return nil, nil, false
	}
	per = min(per, maxPerPage)
	off := 0
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "next__"))
		if err != nil || err2 != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Invalid cursor.")
			return nil, nil, false
		}
		off = n
	}
	total := len(items)
	lo := min(off, total)
	hi := min(lo+per, total)
	meta := &govultr.Meta{Total: total, Links: &govultr.Links{}}
	if hi < total {
		meta.Links.Next = base64.RawURLEncoding.EncodeToString([]byte("next__" + strconv.Itoa(hi)))
	}
	if lo > 0 {
		meta.Links.Prev = base64.RawURLEncoding.EncodeToString([]byte("next__" + strconv.Itoa(max(0, lo-per))))
	}
	return items[lo:hi], meta, true
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ServeHTTP implements the API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Record(r)
	if r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
		writeError(w, http.StatusUnauthorized, "Invalid API token.")
		return
	}
	now := s.now()
	if s.TakeRateLimited() {
		writeError(w, http.StatusTooManyRequests, "Rate limit exceeded.")
		return
	}
	if s.opts.PerSecond > 0 {
		cut := now.Add(-time.Second)
		for len(s.lastSecond) > 0 && !s.lastSecond[0].After(cut) {
			s.lastSecond = s.lastSecond[1:]
		}
		if len(s.lastSecond) >= s.opts.PerSecond {
			writeError(w, http.StatusTooManyRequests, "Rate limit exceeded.")
			return
		}
		s.lastSecond = append(s.lastSecond, now)
	}
	s.advance()
	path, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		writeError(w, http.StatusNotFound, "Not found.")
		return
	}
	s.route(w, r, strings.Split(strings.Trim(path, "/"), "/"))
}

func (s *Sim) route(w http.ResponseWriter, r *http.Request, p []string) {
	m := r.Method
	switch {
	case len(p) == 1 && p[0] == "account" && m == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"account": govultr.Account{Name: "Provider", Email: "provider@example.invalid", ACL: []string{"manage_users", "subscriptions", "provisioning"}, Balance: -50}})
	case len(p) == 1 && p[0] == "regions" && m == http.MethodGet:
		items, meta, ok := pageOf(w, r, s.regions)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"regions": items, "meta": meta})
		}
	case len(p) == 3 && p[0] == "regions" && p[2] == "availability" && m == http.MethodGet:
		s.availability(w, r, p[1])
	case len(p) == 1 && p[0] == "plans" && m == http.MethodGet:
		typ := r.URL.Query().Get("type")
		var items []govultr.Plan
		for _, pl := range s.plans {
			if typ == "" || typ == "all" || pl.Type == typ {
				items = append(items, pl)
			}
		}
		items, meta, ok := pageOf(w, r, items)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"plans": nonNil(items), "meta": meta})
		}
	case len(p) == 1 && p[0] == "os" && m == http.MethodGet:
		items, meta, ok := pageOf(w, r, s.oses)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"os": items, "meta": meta})
		}
	case len(p) == 1 && p[0] == "ssh-keys" && m == http.MethodGet:
		keys := s.sortedKeys()
		items, meta, ok := pageOf(w, r, keys)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"ssh_keys": nonNil(items), "meta": meta})
		}
	case len(p) == 1 && p[0] == "ssh-keys" && m == http.MethodPost:
		s.createKey(w, r)
	case len(p) == 2 && p[0] == "ssh-keys" && (m == http.MethodGet || m == http.MethodDelete):
		k := s.keys[p[1]]
		if k == nil {
			writeError(w, http.StatusNotFound, "SSH key not found.")
			return
		}
		if m == http.MethodDelete {
			delete(s.keys, p[1])
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ssh_key": k})
	case len(p) == 1 && p[0] == "instances" && m == http.MethodGet:
		s.listInstances(w, r)
	case len(p) == 1 && p[0] == "instances" && m == http.MethodPost:
		s.createInstance(w, r)
	case len(p) == 2 && p[0] == "instances" && (m == http.MethodGet || m == http.MethodDelete):
		s.instance(w, m, p[1])
	case len(p) == 3 && p[0] == "instances" && p[2] == "user-data" && m == http.MethodGet:
		in := s.instances[p[1]]
		if in == nil {
			writeError(w, http.StatusNotFound, "Instance not found.")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"user_data": govultr.UserData{Data: in.userData}})
	case len(p) == 3 && p[0] == "instances" && (p[2] == "start" || p[2] == "halt") && m == http.MethodPost:
		s.power(w, p[1], p[2])
	default:
		writeError(w, http.StatusNotFound, "Not found.")
	}
}

func (s *Sim) availability(w http.ResponseWriter, r *http.Request, region string) {
	found := false
	for _, rg := range s.regions {
		found = found || rg.ID == region
	}
	if !found {
		writeError(w, http.StatusNotFound, "Invalid region.")
		return
	}
	typ := r.URL.Query().Get("type")
	avail := []string{}
	for _, pl := range s.plans {
		if (typ == "" || typ == "all" || pl.Type == typ) && contains(pl.Locations, region) && s.inStock(pl.ID, region) {
			avail = append(avail, pl.ID)
		}
	}
	writeJSON(w, http.StatusOK, govultr.PlanAvailability{AvailablePlans: avail})
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// sortedKeys returns the SSH keys by creation (then id).
func (s *Sim) sortedKeys() []govultr.SSHKey {
	return simkit.Sorted(s.keys, func(a, b *govultr.SSHKey) bool { return a.DateCreated+a.ID < b.DateCreated+b.ID })
}

func (s *Sim) createKey(w http.ResponseWriter, r *http.Request) {
	var req govultr.SSHKeyReq
	if !decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		writeError(w, http.StatusBadRequest, "Name is required.")
		return
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.SSHKey)); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid SSH key.")
		return
	}
	k := &govultr.SSHKey{ID: newID(), Name: req.Name, SSHKey: strings.TrimSpace(req.SSHKey), DateCreated: s.now().Format("2006-01-02T15:04:05.000000-07:00")}
	s.keys[k.ID] = k
	writeJSON(w, http.StatusCreated, map[string]any{"ssh_key": k})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(b, v) != nil {
		writeError(w, http.StatusBadRequest, "Invalid JSON body.")
		return false
	}
	return true
}

func (s *Sim) listInstances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var items []govultr.Instance
	for _, in := range s.sorted() {
		if l := q.Get("label"); l != "" && in.v.Label != l {
			continue
		}
		if t := q.Get("tag"); t != "" && !contains(in.v.Tags, t) {
			continue
		}
		if rg := q.Get("region"); rg != "" && in.v.Region != rg {
			continue
		}
		if ip := q.Get("main_ip"); ip != "" && in.v.MainIP != ip {
			continue
		}
		items = append(items, s.view(in))
	}
	items, meta, ok := pageOf(w, r, items)
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"instances": nonNil(items), "meta": meta})
	}
}

func (s *Sim) createInstance(w http.ResponseWriter, r *http.Request) {
	var req govultr.InstanceCreateReq
	if !decode(w, r, &req) {
		return
	}
	plan := simkit.Find(s.plans, func(p *govultr.Plan) bool { return p.ID == req.Plan })
	if plan == nil {
		writeError(w, http.StatusBadRequest, "Invalid plan.")
		return
	}
	region := req.Region
	if simkit.Find(s.regions, func(rg *govultr.Region) bool { return rg.ID == region }) == nil {
		writeError(w, http.StatusBadRequest, "Invalid region.")
		return
	}
	if !contains(plan.Locations, region) || !s.inStock(plan.ID, region) || s.PlacementFails(plan.ID, region) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Plan %s is not available in region %s.", plan.ID, region))
		return
	}
	os := simkit.Find(s.oses, func(o *govultr.OS) bool { return o.ID == req.OsID })
	if os == nil {
		writeError(w, http.StatusBadRequest, "Invalid operating system.")
		return
	}
	if req.Hostname != "" && !hostnameRe.MatchString(req.Hostname) {
		writeError(w, http.StatusBadRequest, "Invalid hostname.")
		return
	}
	for _, id := range req.SSHKeys {
		if s.keys[id] == nil {
			writeError(w, http.StatusBadRequest, "Invalid SSH key ID: "+id)
			return
		}
	}
	if req.UserData != "" {
		b, err := base64.StdEncoding.DecodeString(req.UserData)
		if err != nil {
			writeError(w, http.StatusBadRequest, "user_data must be base64 encoded.")
			return
		}
		if len(b) > maxUserData {
			writeError(w, http.StatusBadRequest, "user_data is too large.")
			return
		}
	}
	ipv6 := req.EnableIPv6 != nil && *req.EnableIPv6
	in := s.newInstance(req.Label, *plan, region, *os, req.Tags, ipv6, s.now())
	if req.Hostname != "" {
		in.v.Hostname = req.Hostname
	}
	in.userData = req.UserData
	in.keyIDs = append([]string(nil), req.SSHKeys...)
	if s.installFaults > 0 {
		s.installFaults--
		in.failed = true
	}
	v := s.view(in)
	pw := randomPassword()
	v.DefaultPassword = pw
	if s.opts.OnCreate != nil {
		s.opts.OnCreate(v)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"instance": v})
}

func (s *Sim) instance(w http.ResponseWriter, method, id string) {
	in := s.instances[id]
	if in == nil {
		writeError(w, http.StatusNotFound, "Instance not found.")
		return
	}
	if method == http.MethodGet {
		writeJSON(w, http.StatusOK, map[string]any{"instance": s.view(in)})
		return
	}
	if in.deleteAt.IsZero() {
		in.deleteAt = s.now().Add(s.opts.DeleteDuration)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) power(w http.ResponseWriter, id, op string) {
	in := s.instances[id]
	if in == nil || !in.deleteAt.IsZero() {
		writeError(w, http.StatusNotFound, "Instance not found.")
		return
	}
	if q := s.opFaults[op]; len(q) > 0 {
		s.opFaults[op] = q[1:]
		writeError(w, http.StatusInternalServerError, q[0])
		return
	}
	in.powerAt = s.now().Add(s.opts.PowerDuration)
	in.powerTo = map[string]string{"start": "running", "halt": "stopped"}[op]
	if op == "start" && in.v.PowerStatus == "stopped" {
		in.v.ServerStatus = "installingbooting"
	}
	w.WriteHeader(http.StatusNoContent)
}
