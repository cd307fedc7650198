package dosim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/digitalocean/godo"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

// Limits and formats of the API.
const (
	maxUserData = 64 * 1024 // user_data is limited to 64 KiB
	maxPerPage  = 200
)

var (
	// A droplet name is a hostname: letters, digits, dots and dashes.
	nameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,253}[a-zA-Z0-9])?$`)
	// Tag names: letters, digits, colons, dashes and underscores, up to 255.
	tagRe = regexp.MustCompile(`^[a-zA-Z0-9_\-:]{1,255}$`)
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError sends the API's error body {"id": ..., "message": ...}.
func writeError(w http.ResponseWriter, status int, id, message string) {
	writeJSON(w, status, map[string]string{"id": id, "message": message, "request_id": "d1e5c0a3-sim"})
}

func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
}

func unprocessable(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusUnprocessableEntity, "unprocessable_entity", msg)
}

// pageOf slices items per page/per_page and builds links and meta.
func pageOf[T any](w http.ResponseWriter, r *http.Request, base string, items []T) ([]T, *godo.Links, *godo.Meta, bool) {
	pg, bad := simkit.Paginate(r.URL.Query(), len(items), 20, maxPerPage)
	if bad != "" {
		writeError(w, http.StatusBadRequest, "bad_request", bad+" must be a positive integer")
		return nil, nil, nil, false
	}
	link := func(n int) string {
		u := *r.URL
		qq := u.Query()
		qq.Set("page", strconv.Itoa(n))
		qq.Set("per_page", strconv.Itoa(pg.Per))
		u.RawQuery = qq.Encode()
		return base + u.RequestURI()
	}
	links := &godo.Links{Pages: &godo.Pages{}}
	if p := pg.Number; p > 1 {
		links.Pages.First, links.Pages.Prev = link(1), link(p-1)
	}
	if p := pg.Number; p < pg.Last {
		links.Pages.Next, links.Pages.Last = link(p+1), link(pg.Last)
	}
	return items[pg.Lo:pg.Hi], links, &godo.Meta{Total: pg.Total}, true
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "could not read body")
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON: "+err.Error())
		return false
	}
	return true
}

// ServeHTTP implements the API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Record(r)
	if r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "Unable to authenticate you")
		return
	}
	now := s.now()
	if refused, after := s.rateLimit(w.Header(), now); refused {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(after.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "too_many_requests", "API Rate limit exceeded.")
		return
	}
	s.advance()
	path, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		notFound(w)
		return
	}
	s.route(w, r, strings.Split(strings.Trim(path, "/"), "/"))
}

func (s *Sim) route(w http.ResponseWriter, r *http.Request, p []string) {
	m := r.Method
	id := func(i int) (int, bool) {
		n, err := strconv.Atoi(p[i])
		if err != nil || n < 1 {
			notFound(w)
			return 0, false
		}
		return n, true
	}
	switch {
	case len(p) == 1 && p[0] == "account" && m == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"account": godo.Account{DropletLimit: 25, Email: "provider@example.invalid", UUID: "b6fc48dbf6d9906cace5f3d1a5a4b4b1", EmailVerified: true, Status: "active"}})
	case len(p) == 1 && p[0] == "regions" && m == http.MethodGet:
		items, links, meta, ok := pageOf(w, r, s.url, s.regions)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"regions": items, "links": links, "meta": meta})
		}
	case len(p) == 1 && p[0] == "sizes" && m == http.MethodGet:
		items, links, meta, ok := pageOf(w, r, s.url, s.sizes)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"sizes": items, "links": links, "meta": meta})
		}
	case len(p) == 1 && p[0] == "images" && m == http.MethodGet:
		items, links, meta, ok := pageOf(w, r, s.url, s.images)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"images": items, "links": links, "meta": meta})
		}
	case len(p) == 2 && p[0] == "images" && m == http.MethodGet:
		for _, img := range s.images {
			if img.Slug == p[1] || strconv.Itoa(img.ID) == p[1] {
				writeJSON(w, http.StatusOK, map[string]any{"image": img})
				return
			}
		}
		notFound(w)
	case len(p) == 2 && p[0] == "account" && p[1] == "keys" && m == http.MethodGet:
		keys := make([]godo.Key, 0, len(s.keys))
		for _, k := range s.sortedKeys() {
			keys = append(keys, *k)
		}
		items, links, meta, ok := pageOf(w, r, s.url, keys)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"ssh_keys": items, "links": links, "meta": meta})
		}
	case len(p) == 2 && p[0] == "account" && p[1] == "keys" && m == http.MethodPost:
		s.createKey(w, r)
	case len(p) == 3 && p[0] == "account" && p[1] == "keys" && (m == http.MethodGet || m == http.MethodDelete):
		s.key(w, m, p[2])
	case len(p) == 1 && p[0] == "droplets" && m == http.MethodGet:
		s.listDroplets(w, r)
	case len(p) == 1 && p[0] == "droplets" && m == http.MethodPost:
		s.createDroplet(w, r)
	case len(p) == 2 && p[0] == "droplets" && (m == http.MethodGet || m == http.MethodDelete):
		if n, ok := id(1); ok {
			s.droplet(w, m, n)
		}
	case len(p) == 3 && p[0] == "droplets" && p[2] == "actions" && m == http.MethodPost:
		if n, ok := id(1); ok {
			s.dropletAction(w, r, n)
		}
	case len(p) == 3 && p[0] == "droplets" && p[2] == "actions" && m == http.MethodGet:
		if n, ok := id(1); ok {
			s.dropletActions(w, r, n)
		}
	case len(p) == 4 && p[0] == "droplets" && p[2] == "actions" && m == http.MethodGet:
		if n, ok := id(3); ok {
			s.getAction(w, n)
		}
	case len(p) == 2 && p[0] == "actions" && m == http.MethodGet:
		if n, ok := id(1); ok {
			s.getAction(w, n)
		}
	case len(p) == 1 && p[0] == "tags" && m == http.MethodGet:
		var tags []godo.Tag
		for _, t := range s.sortedTags() {
			tags = append(tags, s.tag(t))
		}
		items, links, meta, ok := pageOf(w, r, s.url, tags)
		if ok {
			writeJSON(w, http.StatusOK, map[string]any{"tags": nonNil(items), "links": links, "meta": meta})
		}
	case len(p) == 2 && p[0] == "tags" && m == http.MethodGet:
		if !s.tags[p[1]] {
			notFound(w)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"tag": s.tag(p[1])})
	case len(p) == 2 && p[0] == "tags" && m == http.MethodDelete:
		if !s.tags[p[1]] {
			notFound(w)
			return
		}
		delete(s.tags, p[1])
		for _, d := range s.droplets {
			d.d.Tags = without(d.d.Tags, p[1])
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		notFound(w)
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func without(list []string, v string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

func (s *Sim) sortedTags() []string {
	out := make([]string, 0, len(s.tags))
	for t := range s.tags {
		out = append(out, t)
	}
	sortStrings(out)
	return out
}

func (s *Sim) tag(name string) godo.Tag {
	n := 0
	for _, d := range s.droplets {
		for _, t := range d.d.Tags {
			if t == name {
				n++
			}
		}
	}
	return godo.Tag{Name: name, Resources: &godo.TaggedResources{Count: n, Droplets: &godo.TaggedDropletsResources{Count: n}}}
}

// --- SSH keys ------------------------------------------------------------------

func (s *Sim) sortedKeys() []*godo.Key {
	out := make([]*godo.Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	sortBy(out, func(k *godo.Key) int { return k.ID })
	return out
}

func (s *Sim) createKey(w http.ResponseWriter, r *http.Request) {
	var req godo.KeyCreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		unprocessable(w, "Name can't be blank")
		return
	}
	fp := simkit.Fingerprint(req.PublicKey)
	if fp == "" {
		unprocessable(w, "Key invalid type, we support 'ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', or 'ecdsa-sha2-nistp521'")
		return
	}
	for _, k := range s.keys {
		if k.Fingerprint == fp {
			unprocessable(w, "SSH Key is already in use on your account")
			return
		}
	}
	s.nextKey++
	k := &godo.Key{ID: s.nextKey, Name: req.Name, Fingerprint: fp, PublicKey: strings.TrimSpace(req.PublicKey)}
	s.keys[k.ID] = k
	writeJSON(w, http.StatusCreated, map[string]any{"ssh_key": k})
}

func (s *Sim) key(w http.ResponseWriter, method, ref string) {
	var k *godo.Key
	for _, c := range s.keys {
		if strconv.Itoa(c.ID) == ref || c.Fingerprint == ref {
			k = c
		}
	}
	if k == nil {
		notFound(w)
		return
	}
	if method == http.MethodDelete {
		delete(s.keys, k.ID)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ssh_key": k})
}

// --- droplets ------------------------------------------------------------------

func (s *Sim) listDroplets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tag, name := q.Get("tag_name"), q.Get("name")
	if tag != "" && name != "" {
		unprocessable(w, "only one of tag_name and name may be given")
		return
	}
	var items []godo.Droplet
	for _, d := range s.sortedDroplets() {
		if tag != "" && !contains(d.d.Tags, tag) {
			continue
		}
		if name != "" && !strings.EqualFold(d.d.Name, name) {
			continue
		}
		items = append(items, s.view(d))
	}
	items, links, meta, ok := pageOf(w, r, s.url, items)
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"droplets": nonNil(items), "links": links, "meta": meta})
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// createRequest is godo.DropletCreateRequest as it arrives: image and ssh
// keys may be ids or slugs/fingerprints.
type createRequest struct {
	godo.DropletCreateRequest
	Image   json.RawMessage   `json:"image"`
	SSHKeys []json.RawMessage `json:"ssh_keys"`
}

func (s *Sim) createDroplet(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !nameRe.MatchString(req.Name) {
		unprocessable(w, "Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
		return
	}
	region := simkit.Find(s.regions, func(r *godo.Region) bool { return r.Slug == req.Region })
	if region == nil || !region.Available {
		unprocessable(w, "You specified an invalid region for Droplet creation.")
		return
	}
	size := simkit.Find(s.sizes, func(sz *godo.Size) bool { return sz.Slug == req.Size })
	if size == nil {
		unprocessable(w, "You specified an invalid size for Droplet creation.")
		return
	}
	if !contains(size.Regions, region.Slug) || !size.Available || s.PlacementFails(size.Slug, region.Slug) {
		unprocessable(w, "Size is not available in this region.")
		return
	}
	img, ok := s.findImage(req.Image)
	if !ok {
		unprocessable(w, "You specified an invalid image for Droplet creation.")
		return
	}
	if img.MinDiskSize > size.Disk {
		unprocessable(w, "The image requires a larger disk than the size offers.")
		return
	}
	var keyIDs []int
	for _, raw := range req.SSHKeys {
		k := s.findKey(raw)
		if k == nil {
			unprocessable(w, "Key "+string(raw)+" does not exist.")
			return
		}
		keyIDs = append(keyIDs, k.ID)
	}
	for _, t := range req.Tags {
		if !tagRe.MatchString(t) {
			unprocessable(w, fmt.Sprintf("tag %q is invalid: tags may contain letters, numbers, colons, dashes, and underscores", t))
			return
		}
	}
	if len(req.UserData) > maxUserData {
		unprocessable(w, "user_data is limited to 64 KiB")
		return
	}
	d := s.newDroplet(req.Name, *size, *region, img, req.Tags, req.IPv6, s.now())
	d.userData = req.UserData
	d.keyIDs = keyIDs
	dd := d
	a := s.newAction("create", d, s.opts.CreateDuration, func(ok bool) {
		if ok && dd.d.Status == "new" {
			dd.d.Status = "active"
		}
	})
	view := s.view(d)
	if s.opts.OnCreate != nil {
		s.opts.OnCreate(view)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"droplet": view,
		"links":   godo.Links{Actions: []godo.LinkAction{{ID: a.a.ID, Rel: "create", HREF: fmt.Sprintf("%s/v2/actions/%d", s.url, a.a.ID)}}},
	})
}

func (s *Sim) findImage(raw json.RawMessage) (godo.Image, bool) {
	var slug string
	var id int
	if json.Unmarshal(raw, &slug) != nil && json.Unmarshal(raw, &id) != nil {
		return godo.Image{}, false
	}
	for _, img := range s.images {
		if (slug != "" && img.Slug == slug) || (id != 0 && img.ID == id) {
			return img, true
		}
	}
	return godo.Image{}, false
}

func (s *Sim) findKey(raw json.RawMessage) *godo.Key {
	var fp string
	var id int
	if json.Unmarshal(raw, &fp) != nil && json.Unmarshal(raw, &id) != nil {
		return nil
	}
	for _, k := range s.keys {
		if (fp != "" && k.Fingerprint == fp) || (id != 0 && k.ID == id) {
			return k
		}
	}
	return nil
}

func (s *Sim) droplet(w http.ResponseWriter, method string, id int) {
	d := s.droplets[id]
	if d == nil {
		notFound(w)
		return
	}
	if method == http.MethodGet {
		writeJSON(w, http.StatusOK, map[string]any{"droplet": s.view(d)})
		return
	}
	if d.deleteAt.IsZero() {
		d.deleteAt = s.now().Add(s.opts.DeleteDuration)
		for _, a := range s.actions {
			if a.a.ResourceID == id && a.a.Status == godo.ActionInProgress {
				a.fail, a.onDone = true, nil // destroyed under it
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) dropletAction(w http.ResponseWriter, r *http.Request, id int) {
	d := s.droplets[id]
	if d == nil || !d.deleteAt.IsZero() {
		notFound(w)
		return
	}
	var req godo.ActionRequest
	if !decodeBody(w, r, &req) {
		return
	}
	typ, _ := req["type"].(string)
	if s.busy(id) {
		unprocessable(w, "Droplet already has a pending event.")
		return
	}
	var a *action
	switch typ {
	case "power_on":
		a = s.newAction(typ, d, s.opts.PowerDuration, func(ok bool) {
			if ok {
				d.d.Status = "active"
			}
		})
	case "power_off", "shutdown":
		a = s.newAction(typ, d, s.opts.PowerDuration, func(ok bool) {
			if ok {
				d.d.Status = "off"
			}
		})
	case "reboot", "power_cycle":
		if d.d.Status != "active" {
			unprocessable(w, "Droplet is not powered on.")
			return
		}
		a = s.newAction(typ, d, s.opts.PowerDuration, nil)
	case "password_reset":
		a = s.newAction(typ, d, s.opts.PowerDuration, nil) // the new password goes by email
	default:
		unprocessable(w, fmt.Sprintf("action type %q is not supported by the simulator", typ))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"action": a.a})
}

func (s *Sim) dropletActions(w http.ResponseWriter, r *http.Request, id int) {
	if s.droplets[id] == nil {
		notFound(w)
		return
	}
	var items []godo.Action
	for _, a := range s.actions {
		if a.a.ResourceID == id {
			items = append(items, a.a)
		}
	}
	// Newest first, as the API lists them.
	sortBy(items, func(a godo.Action) int { return -a.ID })
	items, links, meta, ok := pageOf(w, r, s.url, items)
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"actions": nonNil(items), "links": links, "meta": meta})
	}
}

func (s *Sim) getAction(w http.ResponseWriter, id int) {
	a := s.actions[id]
	if a == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": a.a})
}
