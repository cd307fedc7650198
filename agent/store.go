package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// The state directory holds what must survive a crash:
//
//	lock                  flock'ed while an agent runs (one agent per state dir)
//	journal/<cid>.json    a contract being provisioned, with the step reached
//	outbox/<seq>.json     a report the API has not accepted yet
//	manual/<cid>.json     a contract a manual backend was told about
//	paused/<cid>.json     an instance the agent stopped for a paused contract
//
// Every file is written atomically (temp file, fsync, rename, fsync of the
// directory), so a crash leaves either the old or the new version.
const (
	journalDir = "journal"
	outboxDir  = "outbox"
	manualDir  = "manual"
	pausedDir  = "paused"
)

// Journal steps, in order. A journal entry exists from the moment the
// contract's lock is held until its report is safely in the outbox.
const (
	jLocked       = "locked"       // lock held, API not told yet
	jStarted      = "started"      // API accepted status "provisioning"
	jProvisioning = "provisioning" // the provisioner was called
)

// JournalEntry is one contract in flight.
type JournalEntry struct {
	ContractID  string                `json:"contractId"`
	Contract    dcapi.PendingContract `json:"contract"`
	Provisioner string                `json:"provisioner"`
	Step        string                `json:"step"`
	Attempt     int                   `json:"attempt"` // how many times the agent (re)started this contract
	// Password is how the contract's root password is reported, decided at
	// the first attempt and kept when it is resumed (credentials.mode).
	Password  string    `json:"password,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Report kinds.
const (
	ReportProvisioning = "provisioning_update" // PUT .../provisioning (provisioned / provisioning_failed)
	ReportTerminated   = "terminated"          // PUT .../terminated
	ReportHealth       = "health"              // health checks, batched
)

// Report is one outbox entry.
type Report struct {
	Seq        uint64                    `json:"seq"`
	Kind       string                    `json:"kind"`
	ContractID string                    `json:"contractId,omitempty"`
	Update     *dcapi.ProvisioningUpdate `json:"update,omitempty"`
	// Result is what a provisioning report says, typed: the outbox acts on
	// it (the contract's cool-down) without reading Update's wire JSON.
	Result Result              `json:"result,omitempty"`
	Checks []dcapi.HealthCheck `json:"checks,omitempty"`
	// Unlock: the contract's lock is held; it is renewed until the report
	// is accepted, then released.
	Unlock bool `json:"unlock,omitempty"`
	// Provisioner and ExternalID name the instance a provisioned report
	// is about, so the agent serves (health-checks) it from the moment the
	// API accepts the report.
	Provisioner string `json:"provisioner,omitempty"`
	ExternalID  string `json:"externalId,omitempty"`
	// Plaintext: Update carries the root password in clear, for a server
	// that encrypts it itself (the live API). The file is 0600 like every
	// state file and is removed once the report is delivered.
	// SealFallback is the requester's SSH key: if the server refuses a
	// plaintext password (dc-api's default profile), the report is sent
	// again with the password sealed to it, or without one.
	Plaintext    bool   `json:"plaintext,omitempty"`
	SealFallback string `json:"sealFallback,omitempty"`
	// Reason is why a terminated report's instance was removed
	// (reconcile's terminate reason).
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// Result is the outcome a provisioning report carries.
type Result string

// Results.
const (
	ResultProvisioned     Result = "provisioned"      // status provisioned, instance details sealed
	ResultFailedRetryable Result = "failed_retryable" // provisioning_failed, retry_possible: it may succeed later
	ResultFailedPermanent Result = "failed_permanent" // provisioning_failed for good
)

// result is r's Result; a record an older agent queued has none, and is
// read from its typed status (a failure counts as retryable: the cool-down
// only delays the API's own decision to offer it again).
func (r Report) result() Result {
	switch {
	case r.Result != "":
		return r.Result
	case r.Update != nil && r.Update.Status == dcapi.StatusProvisioned:
		return ResultProvisioned
	default:
		return ResultFailedRetryable
	}
}

// Store is the on-disk journal and outbox. Methods are safe for concurrent use.
type Store struct {
	dir  string
	lock *os.File

	mu      sync.Mutex
	seq     uint64
	reports []Report // sorted by Seq; mirrors outbox/
}

// OpenStore opens (creating) the state directory and takes its lock, so two
// agents never share one journal.
func OpenStore(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, journalDir), filepath.Join(dir, outboxDir), filepath.Join(dir, manualDir), filepath.Join(dir, pausedDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w (set agent.state_dir to a writable directory; the service unit's StateDirectory= creates /var/lib/dc-agent)", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another dc-agent is running with state directory %s; stop it first (systemctl stop dc-agent) or give this one its own agent.state_dir", dir)
		}
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	// The pid is informational (for people looking at the directory).
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	s := &Store{dir: dir, lock: f}
	if err := s.loadReports(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// Close releases the lock.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing drops the flock
	s.lock = nil
	return err
}

func (s *Store) path(sub, name string) string { return filepath.Join(s.dir, sub, name) }

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return identity.WriteFileAtomic(path, b, 0o600)
}

// removeDurable removes a file and fsyncs its directory, so the removal
// itself survives a crash (a resurrected outbox entry would be re-sent).
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// quarantine moves an unreadable state file aside instead of crashing on
// it, or silently dropping it, at every start.
func quarantine(path string) error {
	return os.Rename(path, path+".corrupt")
}

// PutJournal records (or updates) a contract in flight.
func (s *Store) PutJournal(e JournalEntry) error {
	if err := validContractID(e.ContractID); err != nil {
		return err
	}
	if err := writeJSON(s.path(journalDir, e.ContractID+".json"), e); err != nil {
		return fmt.Errorf("journal %s: %w", e.ContractID, err)
	}
	return nil
}

// DeleteJournal forgets a contract in flight.
func (s *Store) DeleteJournal(cid string) error {
	if err := validContractID(cid); err != nil {
		return err
	}
	return removeDurable(s.path(journalDir, cid+".json"))
}

// Journal returns every contract in flight, oldest first. Unreadable
// entries are moved aside (name.corrupt) and reported in bad.
func (s *Store) Journal() (entries []JournalEntry, bad []string, err error) {
	des, err := os.ReadDir(filepath.Join(s.dir, journalDir))
	if err != nil {
		return nil, nil, err
	}
	for _, de := range des {
		if !strings.HasSuffix(de.Name(), ".json") || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		p := s.path(journalDir, de.Name())
		var e JournalEntry
		b, err := os.ReadFile(p)
		if err == nil {
			e, err = parseJournalEntry(de.Name(), b)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			_ = quarantine(p)
			continue
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].StartedAt.Before(entries[j].StartedAt) })
	return entries, bad, nil
}

func (s *Store) loadReports() error {
	des, err := os.ReadDir(filepath.Join(s.dir, outboxDir))
	if err != nil {
		return err
	}
	for _, de := range des {
		if !strings.HasSuffix(de.Name(), ".json") || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		p := s.path(outboxDir, de.Name())
		var r Report
		b, err := os.ReadFile(p)
		if err == nil {
			r, err = parseReport(de.Name(), b)
		}
		if err != nil {
			_ = quarantine(p)
			continue
		}
		s.reports = append(s.reports, r)
		s.seq = max(s.seq, r.Seq)
	}
	sort.Slice(s.reports, func(i, j int) bool { return s.reports[i].Seq < s.reports[j].Seq })
	return nil
}

// parseJournalEntry decodes journal/<name>: the entry must name the
// contract its file is named after.
func parseJournalEntry(name string, data []byte) (JournalEntry, error) {
	var e JournalEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return e, err
	}
	if err := validContractID(e.ContractID); err != nil {
		return e, err
	}
	if e.ContractID+".json" != name {
		return e, fmt.Errorf("names contract %s", e.ContractID)
	}
	return e, nil
}

// parseReport decodes outbox/<name>: a valid report whose sequence number
// is its file name.
func parseReport(name string, data []byte) (Report, error) {
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return r, err
	}
	if reportName(r.Seq) != name {
		return r, fmt.Errorf("sequence %d does not match the file name", r.Seq)
	}
	return r, r.validate()
}

func (r Report) validate() error {
	switch r.Kind {
	case ReportProvisioning:
		if r.Update == nil {
			return errors.New("provisioning report without update")
		}
		switch r.Result {
		case "", ResultProvisioned, ResultFailedRetryable, ResultFailedPermanent:
		default:
			return fmt.Errorf("unknown report result %q", r.Result)
		}
		return validContractID(r.ContractID)
	case ReportTerminated:
		return validContractID(r.ContractID)
	case ReportHealth:
		for _, c := range r.Checks {
			if err := validContractID(c.ContractID); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown report kind %q", r.Kind)
	}
}

func reportName(seq uint64) string { return fmt.Sprintf("%020d.json", seq) }

// AddReport durably queues a report and returns it with its sequence number.
// When AddReport returns nil the report will be delivered, even across crashes.
func (s *Store) AddReport(r Report) (Report, error) {
	if err := r.validate(); err != nil {
		return r, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	r.Seq = s.seq
	if err := writeJSON(s.path(outboxDir, reportName(r.Seq)), r); err != nil {
		s.seq--
		return r, fmt.Errorf("outbox: %w", err)
	}
	s.reports = append(s.reports, r)
	return r, nil
}

// ReplaceReport rewrites a queued report (a health batch partly delivered).
func (s *Store) ReplaceReport(r Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.reports {
		if s.reports[i].Seq == r.Seq {
			if err := writeJSON(s.path(outboxDir, reportName(r.Seq)), r); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			s.reports[i] = r
			return nil
		}
	}
	return fmt.Errorf("outbox: report %d is gone", r.Seq)
}

// DeleteReport removes a delivered (or undeliverable) report.
func (s *Store) DeleteReport(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := removeDurable(s.path(outboxDir, reportName(seq))); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	for i := range s.reports {
		if s.reports[i].Seq == seq {
			s.reports = append(s.reports[:i], s.reports[i+1:]...)
			break
		}
	}
	return nil
}

// Reports returns the queued reports, oldest first.
func (s *Store) Reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.reports...)
}

// manualRecord remembers that a manual backend was told about a contract.
type manualRecord struct {
	ContractID string    `json:"contractId"`
	NotifiedAt time.Time `json:"notifiedAt"`
}

// MarkManual records that the provider was notified about cid.
func (s *Store) MarkManual(cid string, at time.Time) error {
	if err := validContractID(cid); err != nil {
		return err
	}
	return writeJSON(s.path(manualDir, cid+".json"), manualRecord{ContractID: cid, NotifiedAt: at})
}

// ManualNotified reports whether the provider was already notified about cid.
func (s *Store) ManualNotified(cid string) bool {
	if validContractID(cid) != nil {
		return false
	}
	_, err := os.Stat(s.path(manualDir, cid+".json"))
	return err == nil
}

// PruneManual forgets notifications older than age.
func (s *Store) PruneManual(now time.Time, age time.Duration) {
	des, _ := os.ReadDir(filepath.Join(s.dir, manualDir))
	for _, de := range des {
		if info, err := de.Info(); err == nil && now.Sub(info.ModTime()) > age {
			_ = os.Remove(s.path(manualDir, de.Name()))
		}
	}
}

// PausedRecord is an instance the agent stopped because its contract is
// paused (reconcile's pause list); the agent starts it again when the
// contract is back (keep, offered again, or listed active), and only
// then: an instance stopped by anyone else is never started by the agent.
type PausedRecord struct {
	ContractID  string    `json:"contractId"`
	ExternalID  string    `json:"externalId"`
	Provisioner string    `json:"provisioner"`
	Reason      string    `json:"reason,omitempty"`
	Since       time.Time `json:"since"`
}

// PutPaused records a paused instance.
func (s *Store) PutPaused(r PausedRecord) error {
	if err := validContractID(r.ContractID); err != nil {
		return err
	}
	return writeJSON(s.path(pausedDir, r.ContractID+".json"), r)
}

// DeletePaused forgets a paused instance.
func (s *Store) DeletePaused(cid string) error {
	if err := validContractID(cid); err != nil {
		return err
	}
	return removeDurable(s.path(pausedDir, cid+".json"))
}

// Paused returns the record of cid, if the agent paused its instance.
func (s *Store) Paused(cid string) (PausedRecord, bool) {
	var r PausedRecord
	if validContractID(cid) != nil {
		return r, false
	}
	b, err := os.ReadFile(s.path(pausedDir, cid+".json"))
	if err != nil || json.Unmarshal(b, &r) != nil || r.ContractID != cid || r.ExternalID == "" {
		return r, false
	}
	return r, true
}

// AllPaused returns every paused instance, oldest first.
func (s *Store) AllPaused() []PausedRecord {
	des, _ := os.ReadDir(filepath.Join(s.dir, pausedDir))
	var out []PausedRecord
	for _, de := range des {
		cid, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok {
			continue
		}
		if r, ok := s.Paused(cid); ok {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// validContractID accepts 64 lowercase hex characters: contract ids become
// file names and URL paths, so nothing else may pass.
func validContractID(cid string) error {
	if !identity.IsLowerHex64(cid) {
		return fmt.Errorf("contract id %q is not 64 lowercase hex characters", truncate(cid, 80))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
