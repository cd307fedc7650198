package hcloudsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

// maxUserData is the API's limit on user_data.
const maxUserData = 32 * 1024

type errorDetails struct {
	Fields []fieldError `json:"fields,omitempty"`
}

type fieldError struct {
	Name     string   `json:"name"`
	Messages []string `json:"messages"`
}

// pagination mirrors schema.MetaPagination with the nulls the real API sends
// for missing previous/next pages.
type pagination struct {
	Page         int  `json:"page"`
	PerPage      int  `json:"per_page"`
	PreviousPage *int `json:"previous_page"`
	NextPage     *int `json:"next_page"`
	LastPage     int  `json:"last_page"`
	TotalEntries int  `json:"total_entries"`
}

type meta struct {
	Pagination pagination `json:"pagination"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string, details any) {
	body := map[string]any{"error": map[string]any{"code": code, "message": message, "details": details}}
	if details == nil {
		body["error"].(map[string]any)["details"] = map[string]any{}
	}
	writeJSON(w, status, body)
}

func invalidField(w http.ResponseWriter, field, msg string) {
	writeError(w, http.StatusBadRequest, "invalid_input", "invalid input in field '"+field+"'",
		errorDetails{Fields: []fieldError{{Name: field, Messages: []string{msg}}}})
}

func notFound(w http.ResponseWriter, what string) {
	writeError(w, http.StatusNotFound, "not_found", what+" not found", nil)
}

// page slices items per the page/per_page query and returns the meta.
func page[T any](w http.ResponseWriter, q url.Values, items []T) ([]T, *meta, bool) {
	pg, bad := simkit.Paginate(q, len(items), 25, 50)
	if bad != "" {
		invalidField(w, bad, "must be a positive integer")
		return nil, nil, false
	}
	m := &meta{Pagination: pagination{Page: pg.Number, PerPage: pg.Per, LastPage: pg.Last, TotalEntries: pg.Total}}
	if pg.Number > 1 {
		prev := pg.Number - 1
		m.Pagination.PreviousPage = &prev
	}
	if pg.Number < pg.Last {
		next := pg.Number + 1
		m.Pagination.NextPage = &next
	}
	return items[pg.Lo:pg.Hi], m, true
}

// writePage answers a list request: the page of items the query asks for
// under key, and the pagination meta (as schema.*ListResponse plus "meta").
func writePage[T any](w http.ResponseWriter, q url.Values, key string, items []T) {
	items, m, ok := page(w, q, items)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{key: nonNil(items), "meta": m})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "json_error", "could not read body", nil)
		return false
	}
	if len(b) == 0 {
		return true
	}
	if err := json.Unmarshal(b, v); err != nil {
		writeError(w, http.StatusBadRequest, "json_error", "invalid JSON: "+err.Error(), nil)
		return false
	}
	return true
}

func (s *Sim) route(w http.ResponseWriter, r *http.Request, p []string) {
	q := r.URL.Query()
	id := func(i int) (int64, bool) {
		n, err := strconv.ParseInt(p[i], 10, 64)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "invalid_input", "invalid id "+strconv.Quote(p[i]), nil)
			return 0, false
		}
		return n, true
	}
	m := r.Method
	switch {
	case len(p) == 1 && p[0] == "server_types" && m == http.MethodGet:
		s.listServerTypes(w, q)
	case len(p) == 1 && p[0] == "locations" && m == http.MethodGet:
		s.listLocations(w, q)
	case len(p) == 1 && p[0] == "images" && m == http.MethodGet:
		s.listImages(w, q)
	case len(p) == 1 && p[0] == "ssh_keys" && m == http.MethodGet:
		s.listSSHKeys(w, q)
	case len(p) == 1 && p[0] == "ssh_keys" && m == http.MethodPost:
		s.createSSHKey(w, r)
	case len(p) == 2 && p[0] == "ssh_keys" && (m == http.MethodGet || m == http.MethodDelete):
		if n, ok := id(1); ok {
			s.sshKey(w, m, n)
		}
	case len(p) == 1 && p[0] == "servers" && m == http.MethodGet:
		s.listServers(w, q)
	case len(p) == 1 && p[0] == "servers" && m == http.MethodPost:
		s.createServer(w, r)
	case len(p) == 2 && p[0] == "servers" && (m == http.MethodGet || m == http.MethodDelete):
		if n, ok := id(1); ok {
			s.server(w, m, n)
		}
	case len(p) == 3 && p[0] == "servers" && p[2] == "actions" && m == http.MethodGet:
		if n, ok := id(1); ok {
			s.serverActions(w, q, n)
		}
	case len(p) == 4 && p[0] == "servers" && p[2] == "actions" && m == http.MethodPost:
		if n, ok := id(1); ok {
			s.serverAction(w, n, p[3])
		}
	case len(p) == 1 && p[0] == "actions" && m == http.MethodGet:
		s.listActions(w, q)
	case len(p) == 2 && p[0] == "actions" && m == http.MethodGet:
		if n, ok := id(1); ok {
			a := s.actions[n]
			if a == nil {
				notFound(w, "action")
				return
			}
			writeJSON(w, http.StatusOK, schema.ActionGetResponse{Action: a.a})
		}
	default:
		notFound(w, "route "+m+" "+r.URL.Path)
	}
}

func (s *Sim) listServerTypes(w http.ResponseWriter, q url.Values) {
	writePage(w, q, "server_types", named(q, s.serverTypes, func(st *schema.ServerType) string { return st.Name }))
}

func (s *Sim) listLocations(w http.ResponseWriter, q url.Values) {
	writePage(w, q, "locations", named(q, s.locations, func(l *schema.Location) string { return l.Name }))
}

// named keeps the items whose name is the query's name parameter (all if
// it has none).
func named[T any](q url.Values, items []T, name func(*T) string) []T {
	n := q.Get("name")
	if n == "" {
		return items
	}
	var out []T
	for i := range items {
		if name(&items[i]) == n {
			out = append(out, items[i])
		}
	}
	return out
}

func (s *Sim) listImages(w http.ResponseWriter, q url.Values) {
	var items []schema.Image
	for _, img := range s.images {
		if n := q.Get("name"); n != "" && (img.Name == nil || *img.Name != n) {
			continue
		}
		if a := q.Get("architecture"); a != "" && img.Architecture != a {
			continue
		}
		items = append(items, img)
	}
	writePage(w, q, "images", items)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// --- SSH keys ---------------------------------------------------------------

func (s *Sim) sortedKeys() []schema.SSHKey {
	return simkit.Sorted(s.keys, func(a, b *schema.SSHKey) bool { return a.ID < b.ID })
}

func (s *Sim) listSSHKeys(w http.ResponseWriter, q url.Values) {
	sel, err := parseSelector(q.Get("label_selector"))
	if err != nil {
		invalidField(w, "label_selector", err.Error())
		return
	}
	var items []schema.SSHKey
	for _, k := range s.sortedKeys() {
		if n := q.Get("name"); n != "" && k.Name != n {
			continue
		}
		if f := q.Get("fingerprint"); f != "" && k.Fingerprint != f {
			continue
		}
		if !sel.matches(k.Labels) {
			continue
		}
		items = append(items, k)
	}
	writePage(w, q, "ssh_keys", items)
}

func (s *Sim) createSSHKey(w http.ResponseWriter, r *http.Request) {
	var req schema.SSHKeyCreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Name == "" {
		invalidField(w, "name", "is required")
		return
	}
	fp := simkit.Fingerprint(req.PublicKey)
	if fp == "" {
		invalidField(w, "public_key", "invalid public key")
		return
	}
	labels := map[string]string{}
	if req.Labels != nil {
		labels = *req.Labels
	}
	if msg := checkLabels(labels); msg != "" {
		invalidField(w, "labels", msg)
		return
	}
	for _, k := range s.keys {
		if k.Name == req.Name {
			writeError(w, http.StatusConflict, "uniqueness_error", "SSH key with the same name already exists", nil)
			return
		}
		if k.Fingerprint == fp {
			writeError(w, http.StatusConflict, "uniqueness_error", "SSH key with the same fingerprint already exists", nil)
			return
		}
	}
	s.nextKey++
	k := &schema.SSHKey{ID: s.nextKey, Name: req.Name, Fingerprint: fp, PublicKey: strings.TrimSpace(req.PublicKey), Labels: labels, Created: s.now()}
	s.keys[k.ID] = k
	writeJSON(w, http.StatusCreated, schema.SSHKeyCreateResponse{SSHKey: *k})
}

func (s *Sim) sshKey(w http.ResponseWriter, method string, id int64) {
	k := s.keys[id]
	if k == nil {
		notFound(w, "SSH key")
		return
	}
	if method == http.MethodDelete {
		delete(s.keys, id)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, schema.SSHKeyGetResponse{SSHKey: *k})
}

func checkLabels(labels map[string]string) string {
	for k, v := range labels {
		if !validLabelKey(k) {
			return fmt.Sprintf("label key %q is not valid", k)
		}
		if !validLabelValue(v) {
			return fmt.Sprintf("label value %q (key %s) is not valid", v, k)
		}
	}
	return ""
}

// --- servers ----------------------------------------------------------------

func (s *Sim) sortedServers() []*schema.Server {
	out := make([]*schema.Server, 0, len(s.servers))
	for _, sv := range s.servers {
		out = append(out, sv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Sim) listServers(w http.ResponseWriter, q url.Values) {
	sel, err := parseSelector(q.Get("label_selector"))
	if err != nil {
		invalidField(w, "label_selector", err.Error())
		return
	}
	var items []schema.Server
	for _, sv := range s.sortedServers() {
		if n := q.Get("name"); n != "" && sv.Name != n {
			continue
		}
		if st := q["status"]; len(st) > 0 && !contains(st, sv.Status) {
			continue
		}
		if !sel.matches(sv.Labels) {
			continue
		}
		items = append(items, cloneServer(sv))
	}
	writePage(w, q, "servers", items)
}

func (s *Sim) findServerType(v schema.IDOrName) (schema.ServerType, bool) {
	for _, st := range s.serverTypes {
		if (v.ID != 0 && st.ID == v.ID) || (v.Name != "" && st.Name == v.Name) {
			return st, true
		}
	}
	return schema.ServerType{}, false
}

func (s *Sim) createServer(w http.ResponseWriter, r *http.Request) {
	var req schema.ServerCreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !serverNameRe.MatchString(req.Name) {
		invalidField(w, "name", "name must be a valid hostname of at most 63 characters")
		return
	}
	for _, sv := range s.servers {
		if sv.Name == req.Name {
			writeError(w, http.StatusConflict, "uniqueness_error", "server name is already used", nil)
			return
		}
	}
	st, ok := s.findServerType(req.ServerType)
	if !ok {
		invalidField(w, "server_type", "server type not found")
		return
	}
	locName := req.Location
	if locName == "" {
		locName = s.locations[0].Name
	}
	var loc schema.Location
	for _, l := range s.locations {
		if l.Name == locName || strconv.FormatInt(l.ID, 10) == locName {
			loc = l
		}
	}
	if loc.Name == "" {
		invalidField(w, "location", "location not found")
		return
	}
	var img schema.Image
	for _, im := range s.images {
		if im.Architecture != st.Architecture {
			continue
		}
		if (req.Image.ID != 0 && im.ID == req.Image.ID) || (im.Name != nil && *im.Name == req.Image.Name) {
			img = im
		}
	}
	if img.ID == 0 {
		invalidField(w, "image", "image not found for architecture "+st.Architecture)
		return
	}
	for _, kid := range req.SSHKeys {
		if s.keys[kid] == nil {
			invalidField(w, "ssh_keys", fmt.Sprintf("SSH key %d not found", kid))
			return
		}
	}
	labels := map[string]string{}
	if req.Labels != nil {
		for k, v := range *req.Labels {
			labels[k] = v
		}
	}
	if msg := checkLabels(labels); msg != "" {
		invalidField(w, "labels", msg)
		return
	}
	if len(req.UserData) > maxUserData {
		invalidField(w, "user_data", fmt.Sprintf("user_data must be at most %d bytes", maxUserData))
		return
	}
	var tl *schema.ServerTypeLocation
	for i := range st.Locations {
		if st.Locations[i].Name == loc.Name {
			tl = &st.Locations[i]
		}
	}
	if tl == nil {
		writeError(w, http.StatusBadRequest, "invalid_input", "unsupported location for server type", nil)
		return
	}
	if !tl.Available || s.PlacementFails(st.Name, loc.Name) {
		writeError(w, http.StatusPreconditionFailed, "resource_unavailable", "error during placement", nil)
		return
	}

	sv := s.newServer(req.Name, st, loc, img, labels)
	s.userData[sv.ID] = req.UserData
	svID := sv.ID
	create := s.newAction("create_server", svID, 0, func(ok bool) {
		if cur := s.servers[svID]; cur != nil && cur.Status == "initializing" {
			cur.Status = "off"
		}
	})
	var next []schema.Action
	if req.StartAfterCreate == nil || *req.StartAfterCreate {
		start := s.newAction("start_server", svID, create.a.ID, func(ok bool) {
			if cur := s.servers[svID]; cur != nil && (cur.Status == "off" || cur.Status == "starting") {
				cur.Status = map[bool]string{true: "running", false: "off"}[ok]
			}
		})
		start.onStart = func() {
			if cur := s.servers[svID]; cur != nil && cur.Status == "off" {
				cur.Status = "starting"
			}
		}
		next = append(next, start.a)
	}
	resp := schema.ServerCreateResponse{Server: cloneServer(sv), Action: create.a, NextActions: nonNil(next)}
	if len(req.SSHKeys) == 0 {
		pw := randomPassword()
		resp.RootPassword = &pw
		s.rootPasswords[svID] = pw
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Sim) server(w http.ResponseWriter, method string, id int64) {
	sv := s.servers[id]
	if sv == nil {
		notFound(w, "server")
		return
	}
	if method == http.MethodGet {
		writeJSON(w, http.StatusOK, schema.ServerGetResponse{Server: cloneServer(sv)})
		return
	}
	before := sv.Status
	sv.Status = "deleting"
	a := s.newAction("delete_server", id, 0, func(ok bool) {
		if ok {
			delete(s.servers, id)
			delete(s.userData, id)
		} else if cur := s.servers[id]; cur != nil {
			cur.Status = before
		}
	})
	writeJSON(w, http.StatusOK, schema.ServerDeleteResponse{Action: a.a})
}

func (s *Sim) serverAction(w http.ResponseWriter, id int64, verb string) {
	sv := s.servers[id]
	if sv == nil {
		notFound(w, "server")
		return
	}
	for _, a := range s.actions {
		if a.a.Status == "running" && a.a.Resources[0].ID == id {
			writeError(w, http.StatusLocked, "locked", "server is locked by action "+a.a.Command, nil)
			return
		}
	}
	switch verb {
	case "poweron":
		sv.Status = "starting"
		a := s.newAction("start_server", id, 0, func(ok bool) {
			if cur := s.servers[id]; cur != nil {
				cur.Status = map[bool]string{true: "running", false: "off"}[ok]
			}
		})
		writeJSON(w, http.StatusCreated, schema.ServerActionPoweronResponse{Action: a.a})
	case "poweroff", "shutdown":
		sv.Status = "stopping"
		a := s.newAction(map[string]string{"poweroff": "stop_server", "shutdown": "shutdown_server"}[verb], id, 0, func(ok bool) {
			if cur := s.servers[id]; cur != nil {
				cur.Status = map[bool]string{true: "off", false: "running"}[ok]
			}
		})
		writeJSON(w, http.StatusCreated, schema.ServerActionPoweroffResponse{Action: a.a})
	case "reset_password":
		if sv.Status != "running" {
			writeError(w, http.StatusConflict, "conflict", "server must be running to reset its password", nil)
			return
		}
		// The password is in force once the action succeeded (Hetzner sets
		// it through the guest agent); a failed action changes nothing.
		pw := randomPassword()
		a := s.newAction("reset_password", id, 0, func(ok bool) {
			if ok {
				s.rootPasswords[id] = pw
				s.resets[id]++
			}
		})
		writeJSON(w, http.StatusCreated, schema.ServerActionResetPasswordResponse{Action: a.a, RootPassword: pw})
	default:
		notFound(w, "action "+verb)
	}
}

func (s *Sim) sortedActions(filter func(*simAction) bool, desc bool) []schema.Action {
	var out []schema.Action
	for _, a := range s.actions {
		if filter(a) {
			out = append(out, a.a)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if desc {
			return out[i].ID > out[j].ID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (s *Sim) listActions(w http.ResponseWriter, q url.Values) {
	ids := map[int64]bool{}
	for _, v := range q["id"] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			invalidField(w, "id", "must be an integer")
			return
		}
		ids[n] = true
	}
	if len(ids) == 0 {
		// Required since 2025-01-30.
		invalidField(w, "id", "at least one id is required")
		return
	}
	items := s.sortedActions(func(a *simAction) bool {
		return ids[a.a.ID] && (len(q["status"]) == 0 || contains(q["status"], a.a.Status))
	}, false)
	writePage(w, q, "actions", items)
}

func (s *Sim) serverActions(w http.ResponseWriter, q url.Values, id int64) {
	if s.servers[id] == nil {
		notFound(w, "server")
		return
	}
	desc := contains(q["sort"], "id:desc")
	items := s.sortedActions(func(a *simAction) bool {
		return a.a.Resources[0].ID == id && (len(q["status"]) == 0 || contains(q["status"], a.a.Status))
	}, desc)
	writePage(w, q, "actions", items)
}
