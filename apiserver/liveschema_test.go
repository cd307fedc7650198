package apiserver

import (
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
)

// liveBodies are the schemas of the live profile's request bodies and the
// Go values the handlers decode them into.
var liveBodies = []struct {
	s   *liveSchema
	new func() any
}{
	{schemaHeartbeat, func() any { return new(liveHeartbeatRequest) }},
	{schemaHealth, func() any {
		return new(struct {
			CheckedAt int64   `json:"checkedAt"`
			Status    string  `json:"status"`
			LatencyMs *int    `json:"latencyMs"`
			Details   *string `json:"details"`
		})
	}},
	{schemaProvisioning, func() any {
		return new(struct {
			Status          string  `json:"status"`
			InstanceDetails *string `json:"instanceDetails"`
		})
	}},
	{schemaReconcile, func() any {
		return new(struct {
			RunningInstances []struct {
				ExternalID string  `json:"externalId"`
				ContractID *string `json:"contractId"`
			} `json:"runningInstances"`
		})
	}},
	{schemaSetup, func() any { return new(struct{ Token, AgentPubkey string }) }},
	{schemaCreatePool, func() any { return new(struct{ Name, Location, ProvisionerType string }) }},
	{schemaCreateToken, func() any {
		return new(struct {
			Label          *string `json:"label"`
			ExpiresInHours *uint32 `json:"expiresInHours"`
		})
	}},
}

// required checks, independently of liveSchema.check, what poem-openapi
// demands of v for s: every required field present, not null, of its JSON
// type, integers integral and in range (recursively).
func required(s *liveSchema, v any) bool {
	switch s.kind {
	case kString:
		_, ok := v.(string)
		return ok
	case kBool:
		_, ok := v.(bool)
		return ok
	case kInt:
		n, ok := v.(json.Number)
		if !ok || strings.ContainsAny(string(n), ".eE") {
			return false
		}
		i, ok := new(big.Int).SetString(string(n), 10)
		return ok && i.Cmp(s.min) >= 0 && i.Cmp(s.max) <= 0
	case kArray:
		a, ok := v.([]any)
		if !ok {
			return false
		}
		for _, e := range a {
			if !required(s.elem, e) {
				return false
			}
		}
		return true
	case kObject:
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		for _, f := range s.fields {
			fv, present := m[f.name]
			if f.optional && (!present || fv == nil) {
				continue
			}
			if !required(f.s, fv) {
				return false
			}
		}
		return true
	}
	return false
}

// FuzzLiveBody: parseLive accepts a body exactly when every required field
// is there with its type and range; an accepted body decodes into the Go
// value the handler uses; a refused one is a plain-text 400 naming poem's
// reason. Never a panic.
func FuzzLiveBody(f *testing.F) {
	for _, name := range []string{"testdata/live-rust-heartbeat-docker.json", "testdata/live-rust-heartbeat-proxmox.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(0), b)
	}
	f.Add(uint8(0), []byte(`{"activeContracts":1,"resources":{"cpuCores":1,"cpuThreads":1,"memoryTotalMb":1,"memoryAvailableMb":1,"storagePools":[],"gpuDevices":[],"templates":[]}}`))
	f.Add(uint8(0), []byte(`{"activeContracts":1.0}`))
	f.Add(uint8(0), []byte(`{"activeContracts":9223372036854775808}`))
	f.Add(uint8(1), []byte(`{"checkedAt":1,"status":"healthy","latencyMs":null}`))
	f.Add(uint8(2), []byte(`{"status":"provisioned","instanceDetails":"{}"}`))
	f.Add(uint8(3), []byte(`{"runningInstances":[{"externalId":"1","contractId":null}]}`))
	f.Add(uint8(4), []byte(`{"token":"apt_europe_0","agentPubkey":""}`))
	f.Add(uint8(6), []byte(`{"expiresInHours":4294967296}`))
	f.Add(uint8(6), []byte(``))
	f.Add(uint8(5), []byte(`[]`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		b := liveBodies[int(which)%len(liveBodies)]
		err := parseLive(body, b.s)
		var v any
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.UseNumber()
		wellFormed := len(body) == 0 || json.Valid(body) && dec.Decode(&v) == nil
		want := wellFormed && required(b.s, v)
		if want != (err == nil) {
			t.Fatalf("%s %q: parseLive = %v; poem's rules say accepted=%v", b.s.name, body, err, want)
		}
		if err != nil {
			var pe *plainError
			if !errors.As(err, &pe) || pe.status != 400 || !strings.HasPrefix(pe.msg, "parse request payload error: ") {
				t.Fatalf("refusal %v is not poem's plain 400", err)
			}
			return
		}
		if uerr := json.Unmarshal(body, b.new()); uerr != nil {
			t.Fatalf("%s %q accepted but does not decode: %v", b.s.name, body, uerr)
		}
	})
}

func TestLiveSchemaMessages(t *testing.T) {
	for _, c := range []struct {
		s    *liveSchema
		body string
		want string
	}{
		{schemaHeartbeat, ``, `Expected input type "HeartbeatRequest", found null.`},
		{schemaHeartbeat, `[]`, `Expected input type "HeartbeatRequest", found [].`},
		{schemaHeartbeat, `{"activeContracts":1.5}`, `failed to parse "integer(int64)": invalid integer (occurred while parsing "HeartbeatRequest")`},
		{schemaHeartbeat, `{"activeContracts":1,"capabilities":[1]}`, `Expected input type "string", found 1. (occurred while parsing "[string]") (occurred while parsing "HeartbeatRequest")`},
		{schemaHeartbeat, `{"activeContracts":1,"version":null,"provisionerType":null,"capabilities":null,"bandwidthStats":null,"resources":null}`, ``},
		{schemaReconcile, `{"runningInstances":[{"contractId":"x"}]}`, `Expected input type "string", found null. (occurred while parsing "ReconcileRunningInstance") (occurred while parsing "[ReconcileRunningInstance]") (occurred while parsing "ReconcileRequest")`},
		{schemaCreateToken, `{"expiresInHours":-1}`, `failed to parse "integer(uint32)": Only integers from 0 to 4294967295 are accepted. (occurred while parsing "CreateSetupTokenRequest")`},
		{schemaHealth, `{"checkedAt":1,"status":"ok"} x`, `trailing characters after the JSON value`},
	} {
		err := parseLive([]byte(c.body), c.s)
		got := ""
		if err != nil {
			got = strings.TrimPrefix(err.(*plainError).msg, "parse request payload error: ")
		}
		if got != c.want {
			t.Errorf("%s %s:\n got %q\nwant %q", c.s.name, c.body, got, c.want)
		}
	}
}
