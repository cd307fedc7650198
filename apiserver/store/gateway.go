package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// The gateway's server side: dc_id registration (acme-dns accounts), a
// fake DNS zone in place of the live server's Cloudflare zone, and the
// heartbeats' bandwidth snapshots.

// CheckDCID is CloudflareDns::validate_dc_id (api/src/cloudflare_dns.rs):
// 2-20 characters of [a-z0-9-], no leading or trailing hyphen.
func CheckDCID(dcID string) error {
	switch {
	case len(dcID) < 2 || len(dcID) > 20:
		return fmt.Errorf("Invalid dc_id: must be 2-20 characters, got %d", len(dcID))
	case strings.Trim(dcID, "abcdefghijklmnopqrstuvwxyz0123456789-") != "":
		return errors.New("Invalid dc_id: must contain only [a-z0-9-]")
	case dcID[0] == '-' || dcID[len(dcID)-1] == '-':
		return errors.New("Invalid dc_id: must not start or end with a hyphen")
	}
	return nil
}

// CheckGatewaySlug is the slug rule of manage_gateway_dns
// (api/src/openapi/agents.rs): 6 lowercase letters or digits.
func CheckGatewaySlug(slug string) error {
	if len(slug) != 6 || strings.Trim(slug, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return errors.New("Invalid slug: must be 6 lowercase alphanumeric characters")
	}
	return nil
}

// RegisterGateway is register_gateway's upsert_acme_dns_account
// (api/src/database/acme_dns.rs): the dc_id becomes (or stays) the
// provider's with fresh acme-dns credentials; another provider's dc_id is
// refused. The password is returned once and stored hashed (SHA-256 hex,
// api/src/acme_dns.rs hash_password).
func (s *Store) RegisterGateway(ctx context.Context, provider, dcID, serverURL string, nowNs int64) (dcapi.GatewayRegistration, error) {
	if err := CheckDCID(dcID); err != nil {
		return dcapi.GatewayRegistration{}, invalidf("%v", err)
	}
	user := uuid.NewString()
	var pw [24]byte
	_, _ = rand.Read(pw[:])
	password := base64.RawURLEncoding.EncodeToString(pw[:])
	sum := sha256.Sum256([]byte(password))
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var owner string
		err := tx.QueryRowContext(ctx, s.q(`SELECT provider_pubkey FROM gateway_dc_ids WHERE dc_id = ?`+s.forUpdate()), dcID).Scan(&owner)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO gateway_dc_ids (dc_id, provider_pubkey, acme_username, acme_password_hash, registered_at_ns) VALUES (?, ?, ?, ?, ?)`),
				dcID, provider, user, hex.EncodeToString(sum[:]), nowNs)
			return err
		case err != nil:
			return err
		case owner != provider:
			return conflictf("dc_id '%s' is already registered to a different provider", dcID)
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE gateway_dc_ids SET acme_username = ?, acme_password_hash = ?, registered_at_ns = ? WHERE dc_id = ?`),
			user, hex.EncodeToString(sum[:]), nowNs, dcID)
		return err
	})
	if err != nil {
		return dcapi.GatewayRegistration{}, err
	}
	return dcapi.GatewayRegistration{AcmeDNSServerURL: strings.TrimRight(serverURL, "/") + "/api/v1/acme-dns",
		AcmeDNSUsername: user, AcmeDNSPassword: password, AcmeDNSSubdomain: user}, nil
}

// DNSRecord is one A record of the fake zone.
type DNSRecord struct {
	FQDN           string `json:"fqdn"`
	DCID           string `json:"dcId"`
	Slug           string `json:"slug"`
	ProviderPubkey string `json:"providerPubkey"`
	PublicIP       string `json:"publicIp"`
	CreatedAtNs    int64  `json:"createdAtNs"`
}

// GatewayDNS is manage_gateway_dns (api/src/openapi/agents.rs) on the fake
// zone: the dc_id must be registered to provider; create refuses a record
// that exists (Cloudflare refuses the duplicate), delete of none succeeds.
// fqdn is <slug>.<dc_id>.<gw_prefix>.<domain> (gateway_fqdn).
func (s *Store) GatewayDNS(ctx context.Context, provider string, req dcapi.GatewayDNSRequest, fqdn string, nowNs int64) error {
	if err := CheckGatewaySlug(req.Slug); err != nil {
		return invalidf("%v", err)
	}
	if err := CheckDCID(req.DCID); err != nil {
		return invalidf("Invalid dc_id: %v", err)
	}
	if req.Action == dcapi.GatewayDNSCreate {
		if req.PublicIP == "" {
			return invalidf("public_ip required for create action")
		}
		if ip, err := netip.ParseAddr(req.PublicIP); err != nil || !ip.Is4() {
			// Cloudflare refuses an A record that is not IPv4.
			return invalidf("Failed to create DNS record: %q is not an IPv4 address", clip(req.PublicIP))
		}
	} else if req.Action != dcapi.GatewayDNSDelete {
		return invalidf("Invalid action: must be 'create' or 'delete'")
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var owner string
		err := tx.QueryRowContext(ctx, s.q(`SELECT provider_pubkey FROM gateway_dc_ids WHERE dc_id = ?`), req.DCID).Scan(&owner)
		if errors.Is(err, sql.ErrNoRows) || err == nil && owner != provider {
			return forbiddenf("dc_id '%s' is not registered to this provider", req.DCID)
		}
		if err != nil {
			return err
		}
		if req.Action == dcapi.GatewayDNSDelete {
			_, err := tx.ExecContext(ctx, s.q(`DELETE FROM gateway_dns_records WHERE fqdn = ?`), fqdn)
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM gateway_dns_records WHERE fqdn = ?`), fqdn).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return conflictf("Failed to create DNS record: a record named %s already exists", fqdn)
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO gateway_dns_records (fqdn, dc_id, slug, provider_pubkey, public_ip, created_at_ns) VALUES (?, ?, ?, ?, ?, ?)`),
			fqdn, req.DCID, req.Slug, provider, req.PublicIP, nowNs)
		return err
	})
}

// DNSRecords lists the fake zone by name (provider "": every provider's).
func (s *Store) DNSRecords(ctx context.Context, provider string) ([]DNSRecord, error) {
	q := `SELECT fqdn, dc_id, slug, provider_pubkey, public_ip, created_at_ns FROM gateway_dns_records`
	var args []any
	if provider != "" {
		q += ` WHERE provider_pubkey = ?`
		args = append(args, provider)
	}
	rows, err := s.r.QueryContext(ctx, s.q(q+` ORDER BY fqdn`), args...)
	if err != nil {
		return nil, fmt.Errorf("read DNS records: %w", err)
	}
	return collect(rows, func(sc rowScanner) (r DNSRecord, err error) {
		err = sc.Scan(&r.FQDN, &r.DCID, &r.Slug, &r.ProviderPubkey, &r.PublicIP, &r.CreatedAtNs)
		return r, err
	})
}

// maxBandwidthReports bounds one heartbeat's bandwidthStats.
const maxBandwidthReports = 10000

// RecordBandwidth stores a heartbeat's bandwidthStats, one snapshot per VM
// (api/src/database/bandwidth.rs record_bandwidth). Reports are checked
// first: all or nothing.
func (s *Store) RecordBandwidth(ctx context.Context, provider string, stats []dcapi.VMBandwidthReport, nowNs int64) error {
	if len(stats) == 0 {
		return nil
	}
	if len(stats) > maxBandwidthReports {
		return invalidf("bandwidthStats has %d entries; at most %d", len(stats), maxBandwidthReports)
	}
	for _, b := range stats {
		if !identity.IsLowerHex64(b.ContractID) {
			return invalidf("bandwidthStats: contractId %q is not a contract id (64 lowercase hex)", clip(b.ContractID))
		}
		if err := CheckGatewaySlug(b.GatewaySlug); err != nil {
			return invalidf("bandwidthStats: gatewaySlug %q: %v", clip(b.GatewaySlug), err)
		}
		if b.BytesIn > math.MaxInt64 || b.BytesOut > math.MaxInt64 {
			return invalidf("bandwidthStats: byte counts of %s are out of range", b.ContractID)
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, b := range stats {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO bandwidth_history (contract_id, gateway_slug, provider_pubkey, bytes_in, bytes_out, recorded_at_ns) VALUES (?, ?, ?, ?, ?, ?)`),
				b.ContractID, b.GatewaySlug, provider, int64(b.BytesIn), int64(b.BytesOut), nowNs); err != nil {
				return err
			}
		}
		return nil
	})
}

// BandwidthSnapshot is one stored report.
type BandwidthSnapshot struct {
	dcapi.VMBandwidthReport
	RecordedAtNs int64 `json:"recordedAtNs"`
}

// LatestBandwidth returns each contract's newest snapshot of provider's.
func (s *Store) LatestBandwidth(ctx context.Context, provider string) (map[string]BandwidthSnapshot, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT contract_id, gateway_slug, bytes_in, bytes_out, recorded_at_ns FROM bandwidth_history
		WHERE provider_pubkey = ? ORDER BY recorded_at_ns, id`), provider)
	if err != nil {
		return nil, fmt.Errorf("read bandwidth: %w", err)
	}
	defer rows.Close()
	out := map[string]BandwidthSnapshot{}
	for rows.Next() {
		var b BandwidthSnapshot
		var in, outB int64
		if err := rows.Scan(&b.ContractID, &b.GatewaySlug, &in, &outB, &b.RecordedAtNs); err != nil {
			return nil, err
		}
		b.BytesIn, b.BytesOut = uint64(in), uint64(outB)
		out[b.ContractID] = b
	}
	return out, rows.Err()
}
