package identity

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// PROTOCOL.md §9.
func TestProtocolVector(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x2a}, 32))
	if got, want := PublicHex(priv), "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"; got != want {
		t.Fatalf("pubkey = %s, want %s", got, want)
	}
	path := "/api/v1/providers/" + PublicHex(priv) + "/heartbeat"
	body := []byte(`{"version":"0.4.21","provisionerType":"proxmox","capabilities":null,"activeContracts":0}`)
	got := SignRequest(priv, "1700000000000000000", "123e4567-e89b-42d3-a456-426614174000", "POST", path, body)
	want := "6b38a0d970fb82163469bcff6461210741bccb2541b82088f0cc5e26e280ae4a9ab721599c4124188ca144728d4b5062bbf066f8338782973db0de8f4e6ab400"
	if got != want {
		t.Fatalf("signature = %s, want %s", got, want)
	}
	sig, _ := ParseSignatureHex(want)
	if !Verify(priv.Public().(ed25519.PublicKey), RequestMessage("1700000000000000000", "123e4567-e89b-42d3-a456-426614174000", "POST", path+"?x=1", body), sig) {
		t.Fatal("vector does not verify (query string must be excluded)")
	}
}
