package provisioners

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestTenantMessage(t *testing.T) {
	hostErr := errors.New("clone: can't lock file '/var/lock/qemu-server/lock-9000.conf'")
	for _, tc := range []struct {
		name      string
		err       error
		want      string
		wantRetry bool
	}{
		{"no tenant message: the error itself", Permanent(errors.New("contract cpu_cores 9999 is out of range")), "contract cpu_cores 9999 is out of range", false},
		{"tenant message", ForTenant(Retryable(hostErr), "the VM could not be created"), "the VM could not be created", true},
		{"keeps a permanent verdict", ForTenant(Permanent(hostErr), "bad template"), "bad template", false},
		{"wrapped again", fmt.Errorf("provision: %w", ForTenant(hostErr, "the VM could not be created")), "the VM could not be created", true},
		{"outer without, inner with", Permanent(ForTenant(hostErr, "inner")), "inner", false},
		{"outermost wins", ForTenant(ForTenant(hostErr, "inner"), "outer"), "outer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TenantMessage(tc.err); got != tc.want {
				t.Errorf("TenantMessage = %q, want %q", got, tc.want)
			}
			if got := RetryPossible(tc.err); got != tc.wantRetry {
				t.Errorf("RetryPossible = %v, want %v", got, tc.wantRetry)
			}
			if errors.Is(tc.err, hostErr) && !strings.Contains(tc.err.Error(), hostErr.Error()) {
				t.Errorf("the log's message lost the cause: %v", tc.err)
			}
		})
	}
	if ForTenant(nil, "x") != nil {
		t.Error("ForTenant(nil) is not nil")
	}
}
