package identity

import (
	"crypto/ed25519"
	"testing"
)

// VerifyRequest must accept exactly what Verify accepts over RequestMessage.
func TestVerifyRequestMatchesVerify(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public().(ed25519.PublicKey)
	body := []byte(`{"version":"0.9.0"}`)
	sig := Sign(k, RequestMessage("1700000000000000000", "n-1", "post", "/api/v1/x?q=1", body))
	cases := []struct {
		ts, nonce, method, path string
		body                    []byte
	}{
		{"1700000000000000000", "n-1", "POST", "/api/v1/x", body},
		{"1700000000000000000", "n-1", "post", "/api/v1/x?other=2", body},
		{"1700000000000000001", "n-1", "POST", "/api/v1/x", body},
		{"1700000000000000000", "n-2", "POST", "/api/v1/x", body},
		{"1700000000000000000", "n-1", "PUT", "/api/v1/x", body},
		{"1700000000000000000", "n-1", "POST", "/api/v1/y", body},
		{"1700000000000000000", "n-1", "POST", "/api/v1/x", []byte(`{"version":"0.9.1"}`)},
		{"1700000000000000000", "n-", "1POST", "/api/v1/x", body}, // same bytes, other split
	}
	for i, c := range cases {
		want := Verify(pub, RequestMessage(c.ts, c.nonce, c.method, c.path, c.body), sig)
		if got := VerifyRequest(pub, c.ts, c.nonce, c.method, c.path, c.body, sig); got != want {
			t.Errorf("case %d: VerifyRequest = %v, Verify = %v", i, got, want)
		}
		if i < 2 && !want {
			t.Errorf("case %d: the signed request does not verify", i)
		}
	}
	if VerifyRequest(pub[:31], "1", "n", "POST", "/", nil, sig) || VerifyRequest(pub, "1", "n", "POST", "/", nil, sig[:63]) {
		t.Error("malformed key or signature verified")
	}
}
