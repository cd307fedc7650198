// Package dcapi is PROTOCOL.md as Go: the wire types shared by the agent and
// the reference server, and a client that signs every request.
package dcapi

import (
	"encoding/json"
	"fmt"

	"github.com/decent-stuff/dc-agent/identity"
)

// APIPrefix is the path prefix of every endpoint.
const APIPrefix = "/api/v1"

// Header names of signed requests (PROTOCOL.md §2).
const (
	HeaderTimestamp   = "X-Timestamp"
	HeaderNonce       = "X-Nonce"
	HeaderAgentPubkey = "X-Agent-Pubkey"
	HeaderPublicKey   = "X-Public-Key"
	HeaderSignature   = "X-Signature"
	// HeaderLongPoll is set by servers that honour ?waitSeconds on
	// pending-provision (extension); its value is the wait actually applied.
	HeaderLongPoll = "X-Long-Poll-Wait"
	// HeaderRequestID echoes the server's request id for log correlation.
	HeaderRequestID = "X-Request-Id"
)

// MaxWaitSeconds is the longest long-poll a server honours.
const MaxWaitSeconds = 30

// Contract statuses (PROTOCOL.md §6).
const (
	StatusRequested          = "requested"
	StatusPending            = "pending"
	StatusAccepted           = "accepted"
	StatusProvisioning       = "provisioning"
	StatusProvisioned        = "provisioned"
	StatusProvisioningFailed = "provisioning_failed"
	StatusActive             = "active"
	StatusCompleted          = "completed"
	StatusCancelled          = "cancelled"
	// StatusPaused: the VM is stopped, not destroyed, while a payment
	// dispute is open; resuming returns the contract to active (live API,
	// common/src/contract_status.rs).
	StatusPaused = "paused"
	// StatusExpired: the contract's time is up (live API).
	StatusExpired = "expired"
)

// Health statuses.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthUnknown   = "unknown"
)

// Envelope is the JSON response wrapper {"success","data","error"}.
type Envelope[T any] struct {
	Success bool   `json:"success"`
	Data    T      `json:"data,omitempty"`
	Error   string `json:"error,omitempty"`
}

// PendingContract is a contract ready for provisioning. snake_case on the wire.
type PendingContract struct {
	ContractID           string  `json:"contract_id"`
	OfferingID           string  `json:"offering_id"`
	RequesterSSHPubkey   string  `json:"requester_ssh_pubkey"`
	RequesterPubkey      string  `json:"requester_pubkey,omitempty"`
	InstanceConfig       *string `json:"instance_config"`
	CPUCores             *int    `json:"cpu_cores"`
	MemoryAmount         *string `json:"memory_amount"`
	StorageCapacity      *string `json:"storage_capacity"`
	ProvisionerType      *string `json:"provisioner_type"`
	ProvisionerConfig    *string `json:"provisioner_config"`
	PostProvisionScript  *string `json:"post_provision_script"`
	ProductType          *string `json:"product_type"`
	DatacenterCity       *string `json:"datacenter_city"`
	PaymentConfirmedAtNs *int64  `json:"payment_confirmed_at_ns"`
}

// ActiveContract is a PendingContract plus its live state (contracts/active).
type ActiveContract struct {
	PendingContract
	Status             string  `json:"status"`
	EndsAtNs           *int64  `json:"ends_at_ns"`
	ExternalInstanceID *string `json:"external_instance_id"`
}

// LockResult answers POST .../lock.
type LockResult struct {
	Acquired    bool  `json:"acquired"`
	ExpiresAtNs int64 `json:"expiresAtNs"`
}

// ProvisioningUpdate is the body of PUT /provider/rental-requests/{cid}/provisioning.
type ProvisioningUpdate struct {
	Status          string `json:"status"`
	InstanceDetails string `json:"instanceDetails"`
}

// InstanceDetails is JSON-encoded into ProvisioningUpdate.InstanceDetails on
// success. RootPassword is the sealed credential JSON (never plaintext) or empty.
type InstanceDetails struct {
	ExternalID        string          `json:"external_id"`
	IPAddress         string          `json:"ip_address,omitempty"`
	IPv6Address       string          `json:"ipv6_address,omitempty"`
	SSHPort           int             `json:"ssh_port,omitempty"`
	RootPassword      string          `json:"root_password,omitempty"`
	AdditionalDetails json.RawMessage `json:"additional_details,omitempty"`
	// The gateway's fields, for a VM on a private bridge reached through
	// the host's public address (dc-agent/src/provisioner/mod.rs Instance):
	// SSH is GatewaySSHPort on PublicIP, HTTPS is GatewaySubdomain.
	PublicIP              string `json:"public_ip,omitempty"`
	GatewaySlug           string `json:"gateway_slug,omitempty"`
	GatewaySubdomain      string `json:"gateway_subdomain,omitempty"`
	GatewaySSHPort        int    `json:"gateway_ssh_port,omitempty"`
	GatewayPortRangeStart int    `json:"gateway_port_range_start,omitempty"`
	GatewayPortRangeEnd   int    `json:"gateway_port_range_end,omitempty"`
}

// FailureDetails is JSON-encoded into ProvisioningUpdate.InstanceDetails on failure.
type FailureDetails struct {
	Error         string `json:"error"`
	RetryPossible bool   `json:"retry_possible"`
}

// Heartbeat is the body of POST .../heartbeat.
type Heartbeat struct {
	Version         string     `json:"version,omitempty"`
	ProvisionerType string     `json:"provisionerType,omitempty"`
	Capabilities    []string   `json:"capabilities,omitempty"`
	ActiveContracts int        `json:"activeContracts"`
	Resources       *Resources `json:"resources,omitempty"`
	// BandwidthStats is per-VM gateway traffic (only with [gateway]).
	BandwidthStats []VMBandwidthReport `json:"bandwidthStats,omitempty"`
}

// Resources is the inventory an agent reports with its heartbeat, in the
// live API's ResourceInventory shape (common/src/api_types.rs): every field
// without omitempty is required there (poem-openapi refuses the whole
// heartbeat with a 400 when one is missing, also the three lists), so the
// lists are sent as [] when empty (MarshalJSON).
type Resources struct {
	CPUModel          *string       `json:"cpuModel,omitempty"`
	CPUCores          uint32        `json:"cpuCores"`   // physical cores
	CPUThreads        uint32        `json:"cpuThreads"` // logical CPUs
	CPUMhz            *uint32       `json:"cpuMhz,omitempty"`
	MemoryTotalMB     uint64        `json:"memoryTotalMb"`
	MemoryAvailableMB uint64        `json:"memoryAvailableMb"` // not committed to instances
	StoragePools      []StoragePool `json:"storagePools"`
	GPUDevices        []GPUDevice   `json:"gpuDevices"`
	Templates         []Template    `json:"templates"`
}

// MarshalJSON writes nil lists as [] (the live API requires them).
func (r Resources) MarshalJSON() ([]byte, error) {
	type plain Resources
	p := plain(r)
	if p.StoragePools == nil {
		p.StoragePools = []StoragePool{}
	}
	if p.GPUDevices == nil {
		p.GPUDevices = []GPUDevice{}
	}
	if p.Templates == nil {
		p.Templates = []Template{}
	}
	return json.Marshal(p)
}

// StoragePool is one storage in Resources (StoragePoolInfo).
type StoragePool struct {
	Name        string `json:"name"`
	TotalGB     uint64 `json:"totalGb"`
	AvailableGB uint64 `json:"availableGb"`
	StorageType string `json:"storageType"` // "lvmthin", "zfspool", "dir", "overlay2", … ("unknown" if the backend cannot tell)
}

// GPUDevice is one GPU the backend can pass through (GpuDeviceInfo).
type GPUDevice struct {
	PCIID    string  `json:"pciId"` // "0000:01:00.0"
	Name     string  `json:"name"`
	Vendor   string  `json:"vendor"`
	MemoryMB *uint32 `json:"memoryMb,omitempty"`
}

// Template is one VM template (TemplateInfo).
type Template struct {
	VMID uint32 `json:"vmid"`
	Name string `json:"name"`
}

// HeartbeatResponse answers a heartbeat. The pool fields are set for an
// agent registered by setup token (live API, common/src/api_types.rs).
type HeartbeatResponse struct {
	Acknowledged         bool    `json:"acknowledged"`
	NextHeartbeatSeconds int     `json:"nextHeartbeatSeconds"`
	PoolID               *string `json:"poolId,omitempty"`
	PoolName             *string `json:"poolName,omitempty"`
	UpgradeToVersion     *string `json:"upgradeToVersion,omitempty"`
}

// HealthCheck is one health report. ContractID is set only inside a batch.
type HealthCheck struct {
	ContractID string `json:"contractId,omitempty"`
	CheckedAt  int64  `json:"checkedAt"`
	Status     string `json:"status"`
	LatencyMs  *int   `json:"latencyMs,omitempty"`
	Details    string `json:"details,omitempty"`
}

// HealthRecord is a stored health check as the server returns it.
type HealthRecord struct {
	ID         int64  `json:"id"`
	ContractID string `json:"contractId"`
	CheckedAt  int64  `json:"checkedAt"`
	Status     string `json:"status"`
	LatencyMs  *int   `json:"latencyMs,omitempty"`
	Details    string `json:"details,omitempty"`
}

// HealthBatch is the body of POST /providers/{pubkey}/health (extension).
type HealthBatch struct {
	Checks []HealthCheck `json:"checks"`
}

// MaxHealthBatch is the largest batch a server accepts.
const MaxHealthBatch = 1000

// HealthBatchResult answers a batch.
type HealthBatchResult struct {
	Accepted int `json:"accepted"`
}

// ReconcileInstance is one instance the agent runs. In a reconcile
// answer's keep list EndsAt is when the contract ends (ns; live API).
type ReconcileInstance struct {
	ExternalID string `json:"externalId"`
	ContractID string `json:"contractId"`
	EndsAt     int64  `json:"endsAt,omitempty"`
}

// ReconcileRequest is the body of POST .../reconcile.
type ReconcileRequest struct {
	RunningInstances []ReconcileInstance `json:"runningInstances"`
}

// ReconcileTerminate is an instance the agent must terminate.
type ReconcileTerminate struct {
	ExternalID string `json:"externalId"`
	ContractID string `json:"contractId"`
	Reason     string `json:"reason"`
}

// ReconcileUnknown is an instance the server knows nothing about.
type ReconcileUnknown struct {
	ExternalID string `json:"externalId"`
	Message    string `json:"message"`
}

// ReconcilePause is an instance whose VM the agent must stop, not destroy:
// its contract is paused (a payment dispute); resuming it makes it active
// again and the VM is started (live API).
type ReconcilePause struct {
	ExternalID string `json:"externalId"`
	ContractID string `json:"contractId"`
	Reason     string `json:"reason"`
}

// ReconcileResponse answers reconcile.
type ReconcileResponse struct {
	Keep      []ReconcileInstance  `json:"keep"`
	Terminate []ReconcileTerminate `json:"terminate"`
	Unknown   []ReconcileUnknown   `json:"unknown"`
	Pause     []ReconcilePause     `json:"pause"`
}

// AgentSetupRequest is the (unsigned) body of POST /agents/setup: an agent
// registers itself with a provider's one-time setup token (live API,
// api/src/openapi/agents.rs).
type AgentSetupRequest struct {
	Token       string `json:"token"`
	AgentPubkey string `json:"agentPubkey"`
}

// AgentSetupResponse answers POST /agents/setup.
type AgentSetupResponse struct {
	ProviderPubkey  string   `json:"providerPubkey"`
	PoolID          string   `json:"poolId"`
	PoolName        string   `json:"poolName"`
	PoolLocation    string   `json:"poolLocation"`
	ProvisionerType string   `json:"provisionerType"`
	Permissions     []string `json:"permissions"`
}

// CreatePoolRequest is the body of POST /providers/{pubkey}/pools (signed
// with the provider's main key).
type CreatePoolRequest struct {
	Name            string `json:"name"`
	Location        string `json:"location"`
	ProvisionerType string `json:"provisionerType"`
}

// CreateSetupTokenRequest is the body of POST
// /providers/{pubkey}/pools/{poolId}/setup-tokens; ExpiresInHours defaults
// to 24.
type CreateSetupTokenRequest struct {
	Label          *string `json:"label,omitempty"`
	ExpiresInHours *uint32 `json:"expiresInHours,omitempty"`
}

// CreateDelegationRequest is the body of POST .../agent-delegations.
type CreateDelegationRequest struct {
	AgentPubkey string   `json:"agentPubkey"`
	Permissions []string `json:"permissions"`
	ExpiresAtNs *int64   `json:"expiresAtNs"`
	// IssuedAtNs is the canonical text's issued_at_ns line (absent in
	// codes of the older form).
	IssuedAtNs *int64  `json:"issuedAtNs,omitempty"`
	Label      *string `json:"label"`
	Signature  string  `json:"signature"`
}

// DelegationInfo is one entry of the delegation list.
type DelegationInfo struct {
	AgentPubkey     string   `json:"agentPubkey"`
	ProviderPubkey  string   `json:"providerPubkey"`
	Permissions     []string `json:"permissions"`
	ExpiresAtNs     *int64   `json:"expiresAtNs"`
	Label           *string  `json:"label"`
	CreatedAtNs     int64    `json:"createdAtNs"`
	Active          bool     `json:"active"`
	Online          bool     `json:"online"`
	Version         *string  `json:"version"`
	LastHeartbeatNs *int64   `json:"lastHeartbeatNs"`
	RevokedAtNs     *int64   `json:"revokedAtNs,omitempty"`
	// IssuedAtNs is when the provider signed the stored delegation (its
	// issued_at_ns line; for a setup-token registration, when it
	// happened); absent for a code of the older form.
	IssuedAtNs *int64 `json:"issuedAtNs,omitempty"`
	// PoolID is the agent's pool (registered by setup token), null for an
	// offline-signed delegation.
	PoolID *string `json:"poolId"`
}

// AgentStatus answers GET .../agent-status.
type AgentStatus struct {
	ProviderPubkey  string     `json:"providerPubkey"`
	Online          bool       `json:"online"`
	LastHeartbeatNs *int64     `json:"lastHeartbeatNs"`
	Version         *string    `json:"version"`
	ProvisionerType *string    `json:"provisionerType"`
	Capabilities    []string   `json:"capabilities"`
	ActiveContracts int        `json:"activeContracts"`
	Resources       *Resources `json:"resources"`
	// Agents is dc-api's extension (its default profile only): each agent
	// of the provider. The live API answers one status per provider
	// (api/src/database/agent_delegations.rs AgentStatus) and has no such
	// field: nil then. The endpoint is public, so no version.
	Agents []ProviderAgent `json:"agents,omitempty"`
}

// ProviderAgent is one agent in AgentStatus.Agents.
type ProviderAgent struct {
	// KeyPrefix is the first 8 hex characters of the agent's public key.
	KeyPrefix       string  `json:"keyPrefix"`
	Online          bool    `json:"online"`
	LastHeartbeatNs int64   `json:"lastHeartbeatNs"`
	ProvisionerType *string `json:"provisionerType"`
	ActiveContracts int     `json:"activeContracts"`
}

// AgentKeyPrefixLen is how many hex characters of an agent's key
// ProviderAgent.KeyPrefix carries.
const AgentKeyPrefixLen = 8

// Validate checks the parts of an agent-status answer that are shown as
// they come: every agent's keyPrefix is 8 lowercase hex characters and its
// counts are not negative.
func (a AgentStatus) Validate() error {
	for i, g := range a.Agents {
		if !isHexPrefix(g.KeyPrefix) {
			return fmt.Errorf("agent-status: agents[%d].keyPrefix %.40q is not %d lowercase hex characters (the API answered something else than an agent key prefix)", i, g.KeyPrefix, AgentKeyPrefixLen)
		}
		if g.ActiveContracts < 0 {
			return fmt.Errorf("agent-status: agents[%d].activeContracts is %d, below 0", i, g.ActiveContracts)
		}
	}
	return nil
}

func isHexPrefix(s string) bool {
	if len(s) != AgentKeyPrefixLen {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// HealthSummary answers GET .../health-summary.
type HealthSummary struct {
	TotalChecks        int64    `json:"totalChecks"`
	HealthyChecks      int64    `json:"healthyChecks"`
	UnhealthyChecks    int64    `json:"unhealthyChecks"`
	UnknownChecks      int64    `json:"unknownChecks"`
	UptimePercent      float64  `json:"uptimePercent"`
	AvgLatencyMs       *float64 `json:"avgLatencyMs"`
	ContractsMonitored int64    `json:"contractsMonitored"`
	PeriodStartNs      int64    `json:"periodStartNs"`
	PeriodEndNs        int64    `json:"periodEndNs"`
}

// OnlineWindowNs is how recent a heartbeat must be for "online" (5 minutes).
const OnlineWindowNs = int64(5 * 60 * 1e9)

// TimestampWindowNs is the accepted clock difference of a signed request.
const TimestampWindowNs = int64(5 * 60 * 1e9)

// VMBandwidthReport is one VM's gateway traffic in a heartbeat's
// bandwidthStats: bytes since the gateway started counting for it
// (common/src/api_types.rs VmBandwidthReport; the server stores each report
// as a snapshot, api/src/database/bandwidth.rs).
type VMBandwidthReport struct {
	GatewaySlug string `json:"gatewaySlug"`
	ContractID  string `json:"contractId"`
	BytesIn     uint64 `json:"bytesIn"`
	BytesOut    uint64 `json:"bytesOut"`
}

// Gateway DNS actions (POST /api/v1/agents/dns).
const (
	GatewayDNSCreate = "create"
	GatewayDNSDelete = "delete"
)

// GatewayDNSRequest is the body of POST /api/v1/agents/dns
// (api/src/openapi/agents.rs GatewayDnsRequest). PublicIP is required for
// create and ignored for delete. Needs the dns_manage permission, and dc_id
// registered to the provider by POST /agents/gateway/register.
type GatewayDNSRequest struct {
	Action   string `json:"action"`
	Slug     string `json:"slug"`
	DCID     string `json:"dcId"`
	PublicIP string `json:"publicIp,omitempty"`
}

// GatewayDNSResponse answers it with the full name made or removed:
// <slug>.<dc_id>.<gw_prefix>.<domain> (api/src/cloudflare_dns.rs gateway_fqdn).
type GatewayDNSResponse struct {
	Subdomain string `json:"subdomain"`
}

// GatewayRegisterRequest is the body of POST /api/v1/agents/gateway/register.
type GatewayRegisterRequest struct {
	DCID string `json:"dcId"`
}

// GatewayRegistration answers it: acme-dns credentials Caddy uses for the
// wildcard certificate *.<dc_id>.<gw_prefix>.<domain> (DNS-01). Each
// registration issues a new password. It is a secret: keep it in a 0600
// file (Caddy's environment file), never in logs; String redacts it.
type GatewayRegistration struct {
	AcmeDNSServerURL string `json:"acmeDnsServerUrl"`
	AcmeDNSUsername  string `json:"acmeDnsUsername"`
	AcmeDNSPassword  string `json:"acmeDnsPassword"`
	AcmeDNSSubdomain string `json:"acmeDnsSubdomain"`
}

// String shows the registration without its password.
func (r GatewayRegistration) String() string {
	return fmt.Sprintf("acme-dns %s user %s subdomain %s (password redacted)", r.AcmeDNSServerURL, r.AcmeDNSUsername, r.AcmeDNSSubdomain)
}

// CheckContractID accepts a contract id as the API issues them: 64
// lowercase hex characters (a SHA-256). Ids end up in file names and
// generated config, so anything else is refused.
func CheckContractID(cid string) error {
	if !identity.IsLowerHex64(cid) {
		return fmt.Errorf("contract id %q is not 64 lowercase hex characters", truncateID(cid))
	}
	return nil
}

func truncateID(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
