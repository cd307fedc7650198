package store

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// instanceInfo is what the server needs from a provisioned contract's
// instanceDetails.
type instanceInfo struct {
	ExternalID string
}

const maxDetailsBytes = 64 << 10

// parseInstanceDetails checks the instanceDetails of a "provisioned" update:
// a JSON object (PROTOCOL.md §6) with a non-empty external_id, well-formed
// addresses and port, and a root_password that is a sealed credential for
// this contract (§7) — a plaintext password is refused, never stored.
func parseInstanceDetails(details, contractID string) (*instanceInfo, error) {
	if len(details) > maxDetailsBytes {
		return nil, invalidf("instanceDetails is %d bytes; at most %d", len(details), maxDetailsBytes)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(details), &raw); err != nil || raw == nil {
		return nil, invalidf(`instanceDetails must be a JSON object string {"external_id","ip_address","ipv6_address","ssh_port","root_password","additional_details"}`)
	}
	str := func(key string) (string, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", invalidf("instanceDetails.%s must be a string", key)
		}
		return s, nil
	}
	ext, err := str("external_id")
	if err != nil {
		return nil, err
	}
	if ext == "" || len(ext) > 256 {
		return nil, invalidf("instanceDetails.external_id must be 1..256 characters (the provider's id of the instance)")
	}
	if err := validText("instanceDetails.external_id", ext, 256); err != nil {
		return nil, err
	}
	for _, key := range []string{"ip_address", "ipv6_address", "public_ip"} {
		v, err := str(key)
		if err != nil {
			return nil, err
		}
		if v != "" {
			if _, err := netip.ParseAddr(v); err != nil {
				return nil, invalidf("instanceDetails.%s %q is not an IP address", key, clip(v))
			}
		}
	}
	for _, key := range []string{"ssh_port", "gateway_ssh_port", "gateway_port_range_start", "gateway_port_range_end"} {
		if v, ok := raw[key]; ok && string(v) != "null" {
			var port int
			if err := json.Unmarshal(v, &port); err != nil || port < 0 || port > 65535 {
				return nil, invalidf("instanceDetails.%s must be an integer 1..65535", key)
			}
		}
	}
	// The gateway's names (dc-agent/src/provisioner/mod.rs Instance).
	if v, err := str("gateway_slug"); err != nil {
		return nil, err
	} else if v != "" && CheckGatewaySlug(v) != nil {
		return nil, invalidf("instanceDetails.gateway_slug %q is not 6 lowercase letters or digits", clip(v))
	}
	if v, err := str("gateway_subdomain"); err != nil {
		return nil, err
	} else if err := validText("instanceDetails.gateway_subdomain", v, 253); err != nil {
		return nil, err
	}
	pw, err := str("root_password")
	if err != nil {
		return nil, err
	}
	if pw != "" {
		if err := checkSealed(pw, contractID); err != nil {
			return nil, err
		}
	}
	return &instanceInfo{ExternalID: ext}, nil
}

// checkSealed verifies the shape of a sealed credential: version 2, a 32-byte
// ephemeral key, a 24-byte nonce, a ciphertext with its 16-byte tag, and the
// contract id as AAD. It cannot decrypt (only the requester can); it makes
// sure nothing that looks like a plaintext password is ever stored.
func checkSealed(pw, contractID string) error {
	const refuse = "instanceDetails.root_password must be a sealed credential (PROTOCOL.md §7: a JSON object {version:2,ephemeral_pubkey,nonce,ciphertext,aad}), never a plaintext password; omit it when the requester has no key"
	var sc identity.SealedCredential
	dec := json.NewDecoder(bytes.NewReader([]byte(pw)))
	if err := dec.Decode(&sc); err != nil || sc.Version != 2 {
		return invalidf(refuse)
	}
	b64 := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil
		}
		return b
	}
	aad, _ := hex.DecodeString(contractID)
	switch {
	case len(b64(sc.EphemeralPubkey)) != 32:
		return invalidf("%s (ephemeral_pubkey is not 32 bytes of base64)", refuse)
	case len(b64(sc.Nonce)) != 24:
		return invalidf("%s (nonce is not 24 bytes of base64)", refuse)
	case len(b64(sc.Ciphertext)) < 16:
		return invalidf("%s (ciphertext is shorter than its tag)", refuse)
	case !bytes.Equal(b64(sc.AAD), aad):
		return invalidf("root_password is sealed for another contract (aad is not this contract id)")
	}
	return nil
}

// parseFailureDetails checks the instanceDetails of a provisioning_failed
// update: {"error": "…", "retry_possible": bool}.
func parseFailureDetails(details string) (*dcapi.FailureDetails, error) {
	const want = `instanceDetails of provisioning_failed must be a JSON object string {"error":"…","retry_possible":bool}`
	if len(details) > maxDetailsBytes {
		return nil, invalidf("instanceDetails is %d bytes; at most %d", len(details), maxDetailsBytes)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(details), &raw); err != nil || raw == nil {
		return nil, invalidf(want)
	}
	var f dcapi.FailureDetails
	if err := json.Unmarshal(raw["error"], &f.Error); err != nil || f.Error == "" {
		return nil, invalidf("%s: error must be a non-empty string", want)
	}
	if v, ok := raw["retry_possible"]; ok {
		if err := json.Unmarshal(v, &f.RetryPossible); err != nil {
			return nil, invalidf("%s: retry_possible must be true or false", want)
		}
	}
	if len(f.Error) > 4096 {
		f.Error = strings.ToValidUTF8(f.Error[:4096], "")
	}
	return &f, nil
}
