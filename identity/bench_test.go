package identity

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// A typical agent request: the heartbeat of PROTOCOL.md §9.
var (
	benchKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x2a}, 32))
	benchPath  = "/api/v1/providers/" + PublicHex(benchKey) + "/heartbeat"
	benchBody  = []byte(`{"version":"0.4.21","provisionerType":"proxmox","capabilities":["provision","health_check"],"activeContracts":12,"resources":{"cpuCores":64,"memoryMb":262144}}`)
	benchTS    = "1700000000000000000"
	benchNonce = "123e4567-e89b-42d3-a456-426614174000"
)

func BenchmarkSignRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		SignRequest(benchKey, benchTS, benchNonce, "POST", benchPath, benchBody)
	}
}

// BenchmarkVerifyRequest: "stdlib" is crypto/ed25519 as identity.VerifyRequest
// calls it (the key decoded on every call); "verifier" a Verifier made once
// per key, as dc-api keeps them.
func BenchmarkVerifyRequest(b *testing.B) {
	sig, _ := ParseSignatureHex(SignRequest(benchKey, benchTS, benchNonce, "POST", benchPath, benchBody))
	pub := benchKey.Public().(ed25519.PublicKey)
	b.Run("stdlib", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !VerifyRequest(pub, benchTS, benchNonce, "POST", benchPath, benchBody, sig) {
				b.Fatal("does not verify")
			}
		}
	})
	b.Run("verifier", func(b *testing.B) {
		v, err := NewVerifier(pub)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if !v.VerifyRequest(benchTS, benchNonce, "POST", benchPath, benchBody, sig) {
				b.Fatal("does not verify")
			}
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	pub := benchKey.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal([]byte("correct-horse-battery-staple"), pub, testContract); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	s, err := Seal([]byte("correct-horse-battery-staple"), benchKey.Public().(ed25519.PublicKey), testContract)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(s, benchKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSigned(b *testing.B) {
	d, main := testDelegation(b)
	sd, _ := d.Sign(main)
	code, _ := sd.Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSigned(code); err != nil {
			b.Fatal(err)
		}
	}
}
