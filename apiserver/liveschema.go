package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"strconv"
	"strings"
)

// The live API's request bodies are parsed by poem-openapi 5.1 (the
// Object derive of poem-openapi-derive/src/object.rs and
// poem-openapi/src/types/): every field that is not an Option is required
// — also a Vec the Rust type marks #[serde(default)], since poem ignores
// serde's attributes —, an Option may be missing or null, integers must be
// integral and in their type's range, unknown fields are ignored. A body
// that does not fit is answered with a plain-text 400 "parse request
// payload error: …" before the handler runs. liveSchema checks a body
// against the Rust type it is parsed into, with poem's messages.

type schemaKind int

const (
	kString schemaKind = iota
	kInt
	kBool
	kObject
	kArray
)

// liveSchema is one Rust type as poem-openapi parses it.
type liveSchema struct {
	name     string // poem's type name: "string", "integer(int64)", "HeartbeatRequest", "[TemplateInfo]"
	kind     schemaKind
	min, max *big.Int // integers
	fields   []liveField
	elem     *liveSchema // arrays
}

type liveField struct {
	name     string
	s        *liveSchema
	optional bool // Option<T>
}

func intSchema(format string, min, max *big.Int) *liveSchema {
	return &liveSchema{name: "integer(" + format + ")", kind: kInt, min: min, max: max}
}

var (
	sString = &liveSchema{name: "string", kind: kString}
	sI32    = intSchema("int32", big.NewInt(math.MinInt32), big.NewInt(math.MaxInt32))
	sI64    = intSchema("int64", big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64))
	sU32    = intSchema("uint32", big.NewInt(0), big.NewInt(math.MaxUint32))
	sU64    = intSchema("uint64", big.NewInt(0), new(big.Int).SetUint64(math.MaxUint64))
)

func arrayOf(s *liveSchema) *liveSchema {
	return &liveSchema{name: "[" + s.name + "]", kind: kArray, elem: s}
}

func object(name string, fields ...liveField) *liveSchema {
	return &liveSchema{name: name, kind: kObject, fields: fields}
}

func req(name string, s *liveSchema) liveField { return liveField{name: name, s: s} }
func opt(name string, s *liveSchema) liveField { return liveField{name: name, s: s, optional: true} }

// The request types of the live agent endpoints, field for field.
var (
	// common/src/api_types.rs ResourceInventory and its parts.
	schemaResourceInventory = object("ResourceInventory",
		opt("cpuModel", sString),
		req("cpuCores", sU32),
		req("cpuThreads", sU32),
		opt("cpuMhz", sU32),
		req("memoryTotalMb", sU64),
		req("memoryAvailableMb", sU64),
		req("storagePools", arrayOf(object("StoragePoolInfo",
			req("name", sString), req("totalGb", sU64), req("availableGb", sU64), req("storageType", sString)))),
		req("gpuDevices", arrayOf(object("GpuDeviceInfo",
			req("pciId", sString), req("name", sString), req("vendor", sString), opt("memoryMb", sU32)))),
		req("templates", arrayOf(object("TemplateInfo", req("vmid", sU32), req("name", sString)))),
	)
	// api/src/openapi/agents.rs HeartbeatRequest.
	schemaHeartbeat = object("HeartbeatRequest",
		opt("version", sString),
		opt("provisionerType", sString),
		opt("capabilities", arrayOf(sString)),
		req("activeContracts", sI64),
		opt("bandwidthStats", arrayOf(object("VmBandwidthReport",
			req("gatewaySlug", sString), req("contractId", sString), req("bytesIn", sU64), req("bytesOut", sU64)))),
		opt("resources", schemaResourceInventory),
	)
	// api/src/openapi/common.rs.
	schemaHealth = object("RecordHealthCheckRequest",
		req("checkedAt", sI64), req("status", sString), opt("latencyMs", sI32), opt("details", sString))
	schemaProvisioning = object("ProvisioningStatusRequest",
		req("status", sString), opt("instanceDetails", sString))
	schemaReconcile = object("ReconcileRequest",
		req("runningInstances", arrayOf(object("ReconcileRunningInstance", req("externalId", sString), opt("contractId", sString)))))
	schemaCreatePool = object("CreatePoolRequest",
		req("name", sString), req("location", sString), req("provisionerType", sString))
	schemaCreateToken = object("CreateSetupTokenRequest", opt("label", sString), opt("expiresInHours", sU32))
	// api/src/openapi/agents.rs GatewayDnsRequest, GatewayRegisterRequest.
	schemaGatewayDNS = object("GatewayDnsRequest",
		req("action", sString), req("slug", sString), req("dcId", sString), opt("publicIp", sString))
	schemaGatewayRegister = object("GatewayRegisterRequest", req("dcId", sString))
	// api/src/openapi/agents.rs AgentSetupRequest.
	schemaSetup = object("AgentSetupRequest", req("token", sString), req("agentPubkey", sString))
)

// parseLive checks body against s as poem-openapi would and returns its
// refusal (plain-text 400), or nil.
func parseLive(body []byte, s *liveSchema) error {
	var v any
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return payloadError(jsonErr(err))
		}
		if _, err := dec.Token(); err != io.EOF {
			return payloadError("trailing characters after the JSON value")
		}
	}
	if msg := s.check(v); msg != "" {
		return payloadError(msg)
	}
	return nil
}

func payloadError(msg string) error {
	return &plainError{status: http.StatusBadRequest, msg: "parse request payload error: " + msg}
}

// check returns poem's ParseError message for v, or "".
func (s *liveSchema) check(v any) string {
	switch s.kind {
	case kString:
		if _, ok := v.(string); !ok {
			return s.expected(v)
		}
	case kBool:
		if _, ok := v.(bool); !ok {
			return s.expected(v)
		}
	case kInt:
		n, ok := v.(json.Number)
		if !ok {
			return s.expected(v)
		}
		i, ok := new(big.Int).SetString(string(n), 10)
		if !ok {
			return s.custom("invalid integer")
		}
		if i.Cmp(s.min) < 0 || i.Cmp(s.max) > 0 {
			return s.custom(fmt.Sprintf("Only integers from %s to %s are accepted.", s.min, s.max))
		}
	case kArray:
		a, ok := v.([]any)
		if !ok {
			return s.expected(v)
		}
		for _, e := range a {
			if msg := s.elem.check(e); msg != "" {
				return s.propagate(s.elem, msg)
			}
		}
	case kObject:
		m, ok := v.(map[string]any)
		if !ok {
			return s.expected(v)
		}
		for _, f := range s.fields {
			fv, present := m[f.name]
			if f.optional && (!present || fv == nil) {
				continue
			}
			if msg := f.s.check(fv); msg != "" {
				return s.propagate(f.s, msg)
			}
		}
	}
	return ""
}

// expected is ParseError::expected_type.
func (s *liveSchema) expected(v any) string {
	return fmt.Sprintf("Expected input type %q, found %s.", s.name, jsonText(v))
}

// custom is ParseError::custom.
func (s *liveSchema) custom(msg string) string {
	return fmt.Sprintf("failed to parse %q: %s", s.name, msg)
}

// propagate is ParseError::propagate: an inner type's error names the
// outer type it occurred in.
func (s *liveSchema) propagate(inner *liveSchema, msg string) string {
	if inner.name == s.name {
		return msg
	}
	return fmt.Sprintf("%s (occurred while parsing %q)", msg, s.name)
}

// jsonText prints a value as serde_json's Display does (compact).
func jsonText(v any) string {
	if v == nil {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return strconv.Quote(fmt.Sprint(v))
	}
	return strings.TrimSpace(string(b))
}
