package dcapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const setupOK = `{"success":true,"data":{"providerPubkey":"AB5A0A3B8E0C7A5F4B2D1C3E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0C1D2E3F4A","poolId":"eu-8eba3c90","poolName":"EU Proxmox","poolLocation":"europe","provisionerType":"proxmox","permissions":["provision","health_check","heartbeat","fetch_contracts","dns_manage"]},"error":null}`

func TestParseSetupResponse(t *testing.T) {
	now := func() time.Time { return time.Unix(1700000000, 0) }
	got, err := ParseSetupResponse(200, http.Header{}, []byte(setupOK), now)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProviderPubkey != strings.ToLower("AB5A0A3B8E0C7A5F4B2D1C3E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0C1D2E3F4A") || got.PoolID != "eu-8eba3c90" ||
		got.PoolName != "EU Proxmox" || got.PoolLocation != "europe" || len(got.Permissions) != 5 {
		t.Fatalf("%+v", got)
	}
	for _, c := range []struct {
		name   string
		status int
		body   string
		kind   Kind
		want   string
	}{
		{"used (live)", 200, `{"success":false,"data":null,"error":"Setup token already used"}`, KindPermanent, "Setup token already used"},
		{"expired (dc-api)", 410, `{"success":false,"error":"Setup token expired"}`, KindPermanent, "Setup token expired"},
		{"unknown (dc-api)", 404, `{"success":false,"error":"Invalid setup token"}`, KindNotFound, "Invalid setup token"},
		{"no such route", 404, `Not Found`, KindNotFound, "404 Not Found"},
		{"poem 400", 400, `parse request payload error: failed to parse "AgentSetupRequest": missing field "token"`, KindPermanent, "missing field"},
		{"bad provider", 200, strings.Replace(setupOK, `"AB5A`, `"ZZ5A`, 1), KindPermanent, "providerPubkey"},
		{"no pool", 200, strings.Replace(setupOK, `"eu-8eba3c90"`, `""`, 1), KindPermanent, "poolId"},
		{"pool with a newline", 200, strings.Replace(setupOK, `"eu-8eba3c90"`, `"eu\n[api]"`, 1), KindPermanent, "poolId"},
		{"escape in the name", 200, strings.Replace(setupOK, `"EU Proxmox"`, `"EU \u001b[2J"`, 1), KindPermanent, "poolName"},
		{"missing data", 200, `{"success":true}`, KindPermanent, "providerPubkey"},
	} {
		_, err := ParseSetupResponse(c.status, http.Header{}, []byte(c.body), now)
		var e *Error
		if !errors.As(err, &e) || e.Kind != c.kind || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (kind %v)", c.name, err, e)
		}
	}
}

// FuzzParseSetupResponse: any answer is either a setup whose every field
// is safe to write into the config and to show (a 64-hex lowercase
// provider, a short printable pool id without spaces, printable text), or
// a typed *Error; never a panic.
func FuzzParseSetupResponse(f *testing.F) {
	f.Add(200, []byte(setupOK))
	f.Add(200, []byte(`{"success":false,"error":"Setup token expired"}`))
	f.Add(409, []byte(`{"success":false,"error":"Setup token already used"}`))
	f.Add(404, []byte(`Not Found`))
	f.Add(405, []byte(``))
	f.Add(200, []byte(`{"success":true,"data":{"providerPubkey":"`+strings.Repeat("a", 64)+`","poolId":"p\u2028","poolName":"","poolLocation":"","provisionerType":"","permissions":[]}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		got, err := ParseSetupResponse(status, http.Header{}, body, func() time.Time { return time.Unix(1700000000, 0) })
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Error() == "" {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("status %d accepted", status)
		}
		if len(got.ProviderPubkey) != 64 || strings.Trim(got.ProviderPubkey, "0123456789abcdef") != "" {
			t.Fatalf("provider %q", got.ProviderPubkey)
		}
		if got.PoolID == "" || len(got.PoolID) > maxPoolID || strings.Trim(got.PoolID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") != "" {
			t.Fatalf("pool id %q", got.PoolID)
		}
		for _, s := range append([]string{got.PoolName, got.PoolLocation, got.ProvisionerType}, got.Permissions...) {
			if !utf8.ValidString(s) || strings.ContainsAny(s, "\x1b\r\n\x00") {
				t.Fatalf("unsafe text %q", s)
			}
		}
	})
}
