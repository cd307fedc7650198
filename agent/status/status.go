// Package status is the wire format of the agent's local status socket and a
// small client for it. `dc-agent status` and the TUI monitor import it; the
// agent serves it. It depends on the standard library only, so readers stay
// light.
//
// The socket speaks HTTP/1.1 over a unix socket (mode 0660):
//
//	GET /v1/state   → State as JSON
//	GET /v1/events  → a stream of Event, one JSON object per line (NDJSON);
//	                  the stream starts with the most recent events
//	                  (?since=SEQ: only those after SEQ) and stays open.
package status

import (
	"time"
)

// APIVersion is the path prefix of the socket's endpoints.
const APIVersion = "v1"

// Agent phases.
const (
	PhaseStarting = "starting"
	PhaseRunning  = "running"
	PhaseStopping = "stopping"
)

// Loop states.
const (
	LoopRunning = "running" // doing its work on schedule
	LoopBackoff = "backoff" // the API or network failed; retrying with backoff
	LoopStopped = "stopped" // stopped until a human acts (see Loop.Problem)
)

// Work steps of a contract the agent is working on, in order.
const (
	StepQueued       = "queued"       // waiting for a free provisioning slot
	StepLocking      = "locking"      // taking the contract's lock
	StepStarting     = "starting"     // reporting status "provisioning"
	StepProvisioning = "provisioning" // the provisioner is creating the instance
	StepReporting    = "reporting"    // the result waits in the outbox for the API
)

// State is the agent's live state.
type State struct {
	Version     string    `json:"version"`
	PID         int       `json:"pid"`
	StartedAt   time.Time `json:"startedAt"`
	Now         time.Time `json:"now"`
	Phase       string    `json:"phase"`
	ConfigPath  string    `json:"configPath,omitempty"`
	Endpoint    string    `json:"endpoint"`
	Provider    string    `json:"provider"`
	AgentPubkey string    `json:"agentPubkey"`

	// Online is true while the last heartbeat was accepted less than the
	// API's online window (5 minutes) ago.
	Online          bool       `json:"online"`
	LastHeartbeat   *time.Time `json:"lastHeartbeat,omitempty"`
	LastPoll        *time.Time `json:"lastPoll,omitempty"`
	LongPoll        bool       `json:"longPoll"` // the server holds polls open
	LastHealthCheck *time.Time `json:"lastHealthCheck,omitempty"`
	LastReconcile   *time.Time `json:"lastReconcile,omitempty"`

	Counts       Counts        `json:"counts"`
	Loops        []Loop        `json:"loops"`
	Provisioners []Provisioner `json:"provisioners"`
	// Work lists the contracts being provisioned or reported, oldest first.
	Work []Work `json:"work"`
	// Gateways are the VMs reached through [gateway], by port (none
	// without a gateway).
	Gateways []Gateway `json:"gateways,omitempty"`
	// Pool is the agent pool the API says this agent belongs to (live:
	// registered by setup token), from the last heartbeat's answer.
	Pool *Pool `json:"pool,omitempty"`
	// Upgrade is a newer version the API asked this agent to run.
	Upgrade *Upgrade `json:"upgrade,omitempty"`
	// Paused lists the instances stopped because their contract is paused
	// (a payment dispute); they are started again when it resumes.
	Paused []PausedInstance `json:"paused,omitempty"`
	// Ending lists the live contracts with the time they end, soonest
	// first (reconcile's keep list).
	Ending []Contract `json:"ending,omitempty"`
	// Problems are what a human should fix, each with the command that does.
	Problems []Problem `json:"problems,omitempty"`
	// Line is the one-line summary also sent to systemd as STATUS=.
	Line string `json:"line"`
}

// Pool is an agent pool.
type Pool struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Upgrade states.
const (
	UpgradeOffered = "offered" // shown; auto_update is off (or the agent cannot start it)
	UpgradeStarted = "started" // the upgrade path runs
	UpgradeFailed  = "failed"  // it could not be started
)

// Upgrade is a version the API asked for (upgradeToVersion).
type Upgrade struct {
	Version string `json:"version"`
	State   string `json:"state"`
	Note    string `json:"note,omitempty"` // what to do, or why it failed
}

// PausedInstance is an instance stopped for a paused contract.
type PausedInstance struct {
	ContractID string    `json:"contractId"`
	ExternalID string    `json:"externalId"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
}

// Contract is a live contract the agent serves.
type Contract struct {
	ContractID string     `json:"contractId"`
	ExternalID string     `json:"externalId,omitempty"`
	EndsAt     *time.Time `json:"endsAt,omitempty"`
}

// Counts are the headline numbers.
type Counts struct {
	Active       int `json:"active"`       // contracts the API lists as live
	Queued       int `json:"queued"`       // waiting for a provisioning slot
	Provisioning int `json:"provisioning"` // being provisioned now
	Outbox       int `json:"outbox"`       // reports not yet accepted by the API
	Provisioned  int `json:"provisioned"`  // since start
	Failed       int `json:"failed"`       // since start
	Terminated   int `json:"terminated"`   // since start
	HealthChecks int `json:"healthChecks"` // reported since start
}

// Loop is one of the agent's independent loops (contracts, heartbeat,
// health, reconcile, outbox).
type Loop struct {
	Name        string     `json:"name"`
	State       string     `json:"state"`
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	Failures    int        `json:"failures,omitempty"` // consecutive
}

// Provisioner is one configured backend.
type Provisioner struct {
	Type          string   `json:"type"`
	Default       bool     `json:"default"`
	MaxConcurrent int      `json:"maxConcurrent"`
	InFlight      int      `json:"inFlight"`
	Features      []string `json:"features"`
}

// Gateway is one VM's gateway: where tenants reach it.
type Gateway struct {
	ContractID string `json:"contractId"`
	Subdomain  string `json:"subdomain,omitempty"`
	PublicIP   string `json:"publicIp"`
	SSHPort    int    `json:"sshPort"`
	PortStart  int    `json:"portStart"`
	PortEnd    int    `json:"portEnd"`
	InternalIP string `json:"internalIp,omitempty"`
	// State is the allocation's: allocated, dns, active or releasing.
	State string `json:"state"`
}

// Work is one contract the agent is working on.
type Work struct {
	ContractID  string    `json:"contractId"`
	Provisioner string    `json:"provisioner"`
	Step        string    `json:"step"`
	Detail      string    `json:"detail,omitempty"` // the backend's progress ("cloning")
	StartedAt   time.Time `json:"startedAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Resumed     bool      `json:"resumed,omitempty"` // picked up from the journal after a restart
}

// Problem is something the agent cannot fix by itself.
type Problem struct {
	Loop    string    `json:"loop,omitempty"`
	Message string    `json:"message"`
	Fix     string    `json:"fix,omitempty"`
	Since   time.Time `json:"since"`
}

// Event levels.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Event kinds.
const (
	EventStarted          = "started"
	EventReady            = "ready"
	EventStopping         = "stopping"
	EventReloaded         = "reloaded"
	EventContractReceived = "contract_received"
	EventProvisionStep    = "provision_step"
	EventProvisioned      = "provisioned"
	EventProvisionFailed  = "provision_failed"
	EventReportSent       = "report_sent"
	EventReportDropped    = "report_dropped"
	EventHeartbeat        = "heartbeat"
	EventHealthReported   = "health_reported"
	EventTerminated       = "terminated"
	EventPaused           = "paused"  // an instance stopped for a paused contract
	EventResumed          = "resumed" // and started again
	EventOrphan           = "orphan"
	EventLoopBackoff      = "loop_backoff"
	EventLoopRecovered    = "loop_recovered"
	EventLoopStopped      = "loop_stopped"
	EventNotice           = "notice"
)

// Event is one thing that happened. Events never carry secrets.
type Event struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	Level      string    `json:"level"`
	Loop       string    `json:"loop,omitempty"`
	ContractID string    `json:"contractId,omitempty"`
	Message    string    `json:"message"`
}
