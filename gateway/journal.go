package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Record states, in the order Assign moves through them. The journal is
// written (fsync, rename) before each external effect, so after a crash
// at any instruction the record says what may exist:
//
//	allocated  the block and slug are reserved; the DNS record may exist
//	           (Assign was killed inside the API call)
//	dns        the DNS record exists; forwarding and route may exist
//	active     forwarding and route are in place
//	releasing  forwarding and route are gone (or going); the DNS record
//	           may exist; the block stays reserved until it is deleted
//
// A block is free only when its record is gone, and a record goes only
// after everything it owned is removed: no port is ever given twice, and
// nothing is left behind that no record explains.
const (
	stateAllocated = "allocated"
	stateDNS       = "dns"
	stateActive    = "active"
	stateReleasing = "releasing"
)

// record is one VM's allocation. The first four fields are the Rust
// agent's PortAllocation (dc-agent/src/gateway/port_allocator.rs), so its
// port-allocations.json loads and its blocks stay reserved; a record it
// wrote has no state and counts as dns (its DNS record may exist).
type record struct {
	Base       int    `json:"base"`
	Count      int    `json:"count"`
	ContractID string `json:"contract_id"`
	InternalIP string `json:"internal_ip,omitempty"`
	State      string `json:"state,omitempty"`
	Subdomain  string `json:"subdomain,omitempty"`
	// UpdatedAt is informational (for people reading the file).
	UpdatedAt time.Time `json:"updated_at,omitzero"`

	slug string
}

func (r *record) end() int { return r.Base + r.Count - 1 }

// journalFile is the file's shape: the Rust agent's PortAllocations,
// allocations keyed by slug.
type journalFile struct {
	Allocations map[string]*record `json:"allocations"`
}

// journal is the allocation file, held with an exclusive flock on
// <path>.lock while a Manager has it open.
type journal struct {
	path       string
	lock       *os.File
	bySlug     map[string]*record
	byContract map[string]*record
}

func openJournal(path string) (*journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("port allocations: %w (gateway.port_allocations_path must be in a writable directory)", err)
	}
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("port allocations: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("port allocations %s are in use by another dc-agent; stop it first (systemctl stop dc-agent): two gateways on one file would hand out the same ports", path)
		}
		return nil, fmt.Errorf("lock port allocations %s: %w", path, err)
	}
	j := &journal{path: path, lock: lf}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		j.bySlug = map[string]*record{}
	case err != nil:
		j.close()
		return nil, fmt.Errorf("read port allocations: %w", err)
	default:
		if j.bySlug, err = parseJournal(data); err != nil {
			j.close()
			return nil, fmt.Errorf("port allocations %s: %w; fix or remove that entry by hand (`dc-agent doctor` lists the VMs' gateways) — the agent does not guess, since a wrong guess gives one port to two VMs", path, err)
		}
	}
	j.byContract = map[string]*record{}
	for _, r := range j.bySlug {
		j.byContract[r.ContractID] = r
	}
	return j, nil
}

func (j *journal) close() {
	if j.lock != nil {
		j.lock.Close()
		j.lock = nil
	}
}

// parseJournal reads and checks the allocation file: every record well
// formed, no contract twice, no two blocks overlapping.
func parseJournal(data []byte) (map[string]*record, error) {
	var f journalFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not the allocation JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the allocation JSON")
	}
	out := make(map[string]*record, len(f.Allocations))
	contracts := map[string]string{}
	for slug, r := range f.Allocations {
		if r == nil {
			return nil, fmt.Errorf("slug %q has no allocation", slug)
		}
		if err := checkSlug(slug); err != nil {
			return nil, err
		}
		if r.Base < 1 || r.Count < 1 || r.Count > 65535 || r.end() > 65535 {
			return nil, fmt.Errorf("slug %s: ports %d+%d are not a port block", slug, r.Base, r.Count)
		}
		if err := dcapi.CheckContractID(r.ContractID); err != nil {
			return nil, fmt.Errorf("slug %s: %v", slug, err)
		}
		if other, dup := contracts[r.ContractID]; dup {
			return nil, fmt.Errorf("contract %s has two allocations (%s and %s)", r.ContractID, other, slug)
		}
		contracts[r.ContractID] = slug
		if r.InternalIP != "" {
			if ip, err := netip.ParseAddr(r.InternalIP); err != nil || !ip.Is4() || ip.String() != r.InternalIP {
				return nil, fmt.Errorf("slug %s: internal_ip %q is not an IPv4 address", slug, r.InternalIP)
			}
		}
		switch r.State {
		case "":
			r.State = stateDNS // written by the Rust agent: its DNS record may exist
		case stateAllocated, stateDNS, stateActive, stateReleasing:
		default:
			return nil, fmt.Errorf("slug %s: unknown state %q", slug, r.State)
		}
		if r.Subdomain != "" && checkHostname(r.Subdomain) != nil {
			return nil, fmt.Errorf("slug %s: subdomain %q is not a DNS name", slug, r.Subdomain)
		}
		r.slug = slug
		out[slug] = r
	}
	recs := slices.SortedFunc(maps.Values(out), func(a, b *record) int { return a.Base - b.Base })
	for i := 1; i < len(recs); i++ {
		if recs[i].Base <= recs[i-1].end() {
			return nil, fmt.Errorf("slugs %s (%d-%d) and %s (%d-%d) share ports", recs[i-1].slug, recs[i-1].Base, recs[i-1].end(), recs[i].slug, recs[i].Base, recs[i].end())
		}
	}
	return out, nil
}

// save writes the whole file atomically (temp, fsync, rename, fsync dir).
func (j *journal) save() error {
	f := journalFile{Allocations: j.bySlug}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(j.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write port allocations %s: %w", j.path, err)
	}
	return nil
}

func (j *journal) put(r *record) {
	r.UpdatedAt = time.Now().UTC().Truncate(time.Second)
	j.bySlug[r.slug] = r
	j.byContract[r.ContractID] = r
}

func (j *journal) remove(r *record) {
	delete(j.bySlug, r.slug)
	if j.byContract[r.ContractID] == r {
		delete(j.byContract, r.ContractID)
	}
}

// freeBase returns the lowest block start start+k*per whose ports
// (per of them, up to end inclusive) no record holds. Records of another
// layout (ports_per_vm or the range changed) are respected as they are.
func (j *journal) freeBase(start, end, per int) (int, error) {
	recs := slices.SortedFunc(maps.Values(j.bySlug), func(a, b *record) int { return a.Base - b.Base })
	cand := start
	for _, r := range recs {
		if r.end() < cand {
			continue
		}
		if cand+per-1 < r.Base {
			break
		}
		// Past r, on the grid.
		cand = start + (r.end()-start+per)/per*per
	}
	if cand+per-1 > end {
		return 0, fmt.Errorf("no free block of %d ports left in %d-%d (%d VMs hold blocks); raise gateway.port_range_end or lower ports_per_vm", per, start, end, len(recs))
	}
	return cand, nil
}

const slugAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newSlug draws a 6-character [a-z0-9] slug (the API's format,
// api/src/openapi/agents.rs) from crypto/rand, unused in the journal. The
// Rust agent used a non-cryptographic generator; subdomains should not be
// guessable from one another.
func (j *journal) newSlug() string {
	for {
		var b [6]byte
		for i := 0; i < len(b); {
			var r [1]byte
			_, _ = rand.Read(r[:]) // never fails (crypto/rand)
			if int(r[0]) >= 256/len(slugAlphabet)*len(slugAlphabet) {
				continue // unbiased: reject the tail of the byte range
			}
			b[i] = slugAlphabet[int(r[0])%len(slugAlphabet)]
			i++
		}
		if _, used := j.bySlug[string(b[:])]; !used {
			return string(b[:])
		}
	}
}

// checkSlug accepts 6 lowercase letters or digits.
func checkSlug(s string) error {
	if len(s) != 6 || strings.Trim(s, slugAlphabet) != "" {
		return fmt.Errorf("slug %q is not 6 lowercase letters or digits", s)
	}
	return nil
}

// checkHostname accepts a lowercase DNS name: labels of [a-z0-9-], not
// starting or ending with a hyphen, at most 63 characters each, 253 in all.
// Names go into Caddy site files, so nothing else may pass.
func checkHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%q is not a DNS name (1-253 characters)", h)
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' || strings.Trim(l, slugAlphabet+"-") != "" {
			return fmt.Errorf("%q is not a lowercase DNS name", h)
		}
	}
	return nil
}
