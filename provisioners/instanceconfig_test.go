package provisioners

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func testPolicy(allow ...string) ConfigPolicy {
	return ConfigPolicy{Type: "proxmox", Allow: allow, Keys: []RequesterKey{
		{Name: "template", Check: OneOf("debian-12", "ubuntu-24.04")},
		{Name: "net"},
	}}
}

func TestMergeConfig(t *testing.T) {
	const offering = `{"template":"ubuntu-24.04","ipconfig0":"ip=dhcp","storage":"local-lvm","net":{"bridge":"vmbr0","vlan":1}}`
	for _, tc := range []struct {
		name, offering, instance string
		pol                      ConfigPolicy
		want                     string // merged JSON, or the error's text
		fails                    bool
	}{
		{name: "no instance config", offering: offering, instance: "", pol: testPolicy(), want: offering},
		{name: "null instance config", offering: offering, instance: " null ", pol: testPolicy(), want: offering},
		{name: "empty object", offering: offering, instance: "{}", pol: testPolicy(), want: offering},
		{name: "no offering config", instance: `{"template":"debian-12"}`, pol: testPolicy(), want: `{"template":"debian-12"}`},
		{name: "declared key, good value", offering: offering, instance: `{"template":"debian-12"}`, pol: testPolicy(),
			want: `{"template":"debian-12","ipconfig0":"ip=dhcp","storage":"local-lvm","net":{"bridge":"vmbr0","vlan":1}}`},
		{name: "declared key merged recursively", offering: offering, instance: `{"net":{"vlan":7}}`, pol: testPolicy(),
			want: `{"template":"ubuntu-24.04","ipconfig0":"ip=dhcp","storage":"local-lvm","net":{"bridge":"vmbr0","vlan":7}}`},
		{name: "provider's key", offering: offering, instance: `{"ipconfig0":"ip=10.0.0.5/24"}`, pol: testPolicy(), fails: true,
			want: `instance_config sets "ipconfig0", which a contract may not set on this provider's proxmox backend (contracts may set: "net", "template"); the provider can allow it with instance_config_allow = ["ipconfig0"] in the backend's [provisioner] section of dc-agent.toml`},
		{name: "first bad key by name", offering: offering, instance: `{"template":"debian-12","zz":1,"storage":"fast","ipconfig0":"x"}`, pol: testPolicy(), fails: true,
			want: `instance_config sets "ipconfig0"`},
		{name: "no keys at all", instance: `{"image":"x"}`, pol: ConfigPolicy{Type: "docker"}, fails: true,
			want: `instance_config sets "image", which a contract may not set on this provider's docker backend (contracts may set no keys)`},
		{name: "declared key, bad value", offering: offering, instance: `{"template":"9000"}`, pol: testPolicy(), fails: true,
			want: `instance_config "template": value "9000" is not accepted; use one of "debian-12", "ubuntu-24.04"`},
		{name: "declared key, wrong type", instance: `{"template":9000}`, pol: testPolicy(), fails: true,
			want: `instance_config "template": value 9000 is not accepted`},
		{name: "long value bounded", instance: `{"template":"` + strings.Repeat("é", 100) + `"}`, pol: testPolicy(), fails: true,
			want: `value "` + strings.Repeat("é", 59) + `…`},
		{name: "provider allows a key", offering: offering, instance: `{"ipconfig0":"ip=10.0.0.5/24"}`, pol: testPolicy("ipconfig0"),
			want: `{"template":"ubuntu-24.04","ipconfig0":"ip=10.0.0.5/24","storage":"local-lvm","net":{"bridge":"vmbr0","vlan":1}}`},
		{name: "provider's allow skips the value check", instance: `{"template":"9000"}`, pol: testPolicy("template"), want: `{"template":"9000"}`},
		{name: "provider allows all", instance: `{"a":1,"b":{"c":2}}`, pol: ConfigPolicy{Allow: []string{AnyKey}}, want: `{"a":1,"b":{"c":2}}`},
		{name: "backend takes any key", instance: `{"a":1}`, pol: ConfigPolicy{Keys: []RequesterKey{{Name: AnyKey}}}, want: `{"a":1}`},
		{name: "other allowed keys do not leak", instance: `{"storage":"x"}`, pol: testPolicy("ipconfig0"), fails: true,
			want: `(contracts may set: "ipconfig0", "net", "template")`},
		{name: "instance config not an object", instance: `"ipconfig0=x"`, pol: testPolicy(), fails: true, want: "instance_config is not a JSON object"},
		{name: "offering config not an object", offering: `[1]`, pol: testPolicy(), fails: true, want: "provisioner_config is not a JSON object"},
		{name: "offering config is trusted", offering: `{"ipconfig0":"ip=10.0.0.9/24","anything":true}`, pol: ConfigPolicy{}, want: `{"ipconfig0":"ip=10.0.0.9/24","anything":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeConfig(tc.offering, tc.instance, tc.pol)
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.want)
				}
				if RetryPossible(err) {
					t.Fatalf("%v is retryable; contract data does not change on retry", err)
				}
				if got != nil {
					t.Fatalf("a refused config was returned: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("merged = %v, want %v", got, want)
			}
		})
	}
}

func TestPolicyFor(t *testing.T) {
	if pol := PolicyFor(plainBackend{}, "docker", []string{"x"}); len(pol.Keys) != 0 || pol.Type != "docker" || len(pol.Allow) != 1 {
		t.Fatalf("a backend without RequesterKeys: %+v", pol)
	}
	if pol := PolicyFor(settableBackend{}, "proxmox", nil); len(pol.Keys) != 1 || pol.Keys[0].Name != "template" {
		t.Fatalf("a backend with RequesterKeys: %+v", pol)
	}
}

type plainBackend struct{ Provisioner }

type settableBackend struct{ Provisioner }

func (settableBackend) RequesterKeys() []RequesterKey { return []RequesterKey{{Name: "template"}} }
