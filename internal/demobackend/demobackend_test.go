package demobackend

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
)

// call runs one backend call and returns its exit status and answer.
func call(t *testing.T, dir, in string) (int, output) {
	t.Helper()
	var out bytes.Buffer
	code := Main(dir, strings.NewReader(in), &out, io.Discard)
	var o output
	if err := json.Unmarshal(out.Bytes(), &o); err != nil {
		t.Fatalf("%s: answer %q: %v", in, out.String(), err)
	}
	return code, o
}

// TestInstanceChanges: pause, resume, reset_password and rotate_ssh_key
// change the stored instance; on a missing instance they fail, not
// retryable.
func TestInstanceChanges(t *testing.T) {
	dir := t.TempDir()
	b := &Backend{Dir: dir}
	if err := b.Set("delay", "0s"); err != nil {
		t.Fatal(err)
	}
	if code, o := call(t, dir, `{"action":"provision","contract_id":"c1","instance_name":"vm1"}`); code != 0 || o.Instance == nil {
		t.Fatalf("provision: %d %+v", code, o)
	}
	id := b.Instances()[0].ExternalID
	steps := []struct {
		in    string
		check func(Instance) bool
	}{
		{`{"action":"pause","external_id":"` + id + `"}`, func(i Instance) bool { return i.Stopped }},
		{`{"action":"resume","external_id":"` + id + `"}`, func(i Instance) bool { return !i.Stopped }},
		{`{"action":"reset_password","external_id":"` + id + `","password":"pw1"}`, func(i Instance) bool {
			return i.PasswordHash == PasswordHash("pw1") && i.PasswordSets == 1
		}},
		{`{"action":"rotate_ssh_key","external_id":"` + id + `","requester_ssh_pubkey":"ssh-ed25519 AAAA k"}`, func(i Instance) bool {
			return slices.Equal(i.AuthorizedKeys, []string{"ssh-ed25519 AAAA k"})
		}},
		{`{"action":"rotate_ssh_key","external_id":"` + id + `","requester_ssh_pubkey":"ssh-ed25519 AAAA k"}`, func(i Instance) bool {
			return len(i.AuthorizedKeys) == 1 // once
		}},
	}
	for _, s := range steps {
		if code, o := call(t, dir, s.in); code != 0 || !o.Success {
			t.Fatalf("%s: %d %+v", s.in, code, o)
		}
		if inst := b.Instances()[0]; !s.check(inst) {
			t.Fatalf("after %s: %+v", s.in, inst)
		}
	}
	for _, action := range []string{"pause", "resume", "reset_password", "rotate_ssh_key"} {
		code, o := call(t, dir, `{"action":"`+action+`","external_id":"demo-gone"}`)
		if code != 1 || o.Success || o.Error != "instance demo-gone does not exist" || o.RetryPossible == nil || *o.RetryPossible {
			t.Errorf("%s of a missing instance: %d %+v", action, code, o)
		}
	}
}
