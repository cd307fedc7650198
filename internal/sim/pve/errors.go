package pve

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is a failure as PVE reports it. Status is the HTTP status the API
// answers with: 500 carries Msg as the reason phrase (PVE's way), 400
// carries Params (one message per parameter, "Parameter verification
// failed."), 403 a permission check failure, 401 an authentication failure,
// 501 an unknown method.
type Error struct {
	Status int
	Msg    string
	Params map[string]string
}

func (e *Error) Error() string {
	if len(e.Params) == 0 {
		return e.Msg
	}
	keys := make([]string, 0, len(e.Params))
	for k := range e.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(e.Msg)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n%s: %s", k, e.Params[k])
	}
	return b.String()
}

// Fail is a 500 error with msg as the reason phrase.
func Fail(format string, args ...any) *Error {
	return &Error{Status: 500, Msg: fmt.Sprintf(format, args...)}
}

// ParamError is a 400 parameter verification error.
func ParamError(params map[string]string) *Error {
	return &Error{Status: 400, Msg: "Parameter verification failed.", Params: params}
}

func paramErr(name, format string, args ...any) *Error {
	return ParamError(map[string]string{name: fmt.Sprintf(format, args...)})
}

// PermError is the 403 a failed privilege check gives.
func PermError(path string, privs ...string) *Error {
	return &Error{Status: 403, Msg: fmt.Sprintf("Permission check failed (%s, %s)", path, strings.Join(privs, "|"))}
}

// AsError returns err as *Error (a plain error becomes a 500).
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: 500, Msg: err.Error()}
}

func configMissing(node string, vmid int) *Error {
	return Fail("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", node, vmid)
}
