package proxmox

import (
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// What a contract's requester may set on Proxmox: a named template of the
// provider and DNS servers; never addresses, VMIDs or storage.
func TestRequesterKeys(t *testing.T) {
	p := &Provisioner{cfg: config.ProxmoxConfig{Node: "pve1", TemplateVMID: 9000, Templates: map[string]int{"debian-12": 9001, "ubuntu-24.04": 9000}}}
	pol := provisioners.PolicyFor(p, Type, nil)
	const offering = `{"template":"ubuntu-24.04","ipconfig0":"ip=dhcp","storage":"local-lvm"}`
	for _, tc := range []struct{ instance, want string }{
		{`{"template":"debian-12"}`, ""},
		{`{"nameserver":"1.1.1.1"}`, ""},
		{`{"nameserver":"1.1.1.1 2606:4700:4700::1111  9.9.9.9"}`, ""},
		{`{"ipconfig0":"ip=10.0.0.5/24,gw=10.0.0.1"}`, `instance_config sets "ipconfig0", which a contract may not set on this provider's proxmox backend (contracts may set: "nameserver", "template")`},
		{`{"template_vmid":100}`, `instance_config sets "template_vmid"`},
		{`{"storage":"fast"}`, `instance_config sets "storage"`},
		{`{"ciuser":"admin"}`, `instance_config sets "ciuser"`},
		{`{"template":"100"}`, `instance_config "template": value "100" is not a template name of this provider (known: debian-12, ubuntu-24.04)`},
		{`{"template":"centos"}`, `value "centos" is not a template name`},
		{`{"template":{"debian-12":1}}`, `is not a template name`},
		{`{"nameserver":"1.1.1.1,8.8.8.8"}`, `instance_config "nameserver": value "1.1.1.1,8.8.8.8" is not a list of 1 to 3 IP addresses`},
		{`{"nameserver":""}`, `is not a list of 1 to 3 IP addresses`},
		{`{"nameserver":"1.1.1.1 1.0.0.1 8.8.8.8 8.8.4.4"}`, `is not a list of 1 to 3 IP addresses`},
		{`{"nameserver":"fe80::1%vmbr0"}`, `is not a list of 1 to 3 IP addresses`},
		{`{"nameserver":["1.1.1.1"]}`, `is not a list of 1 to 3 IP addresses`},
	} {
		cfg, err := provisioners.MergeConfig(offering, tc.instance, pol)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s refused: %v", tc.instance, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", tc.instance, err, tc.want)
		case tc.want != "" && provisioners.RetryPossible(err):
			t.Errorf("%s: retryable", tc.instance)
		case tc.want == "" && cfg["ipconfig0"] != "ip=dhcp":
			t.Errorf("%s: ipconfig0 = %v", tc.instance, cfg["ipconfig0"])
		}
	}
	// The provider's own offering may still name a template by VMID, and
	// allow contracts to set any key it chooses.
	cfg, err := provisioners.MergeConfig(`{"template":"9005"}`, "", pol)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := p.templateFor(provisioners.Request{Config: cfg}); err != nil || id != 9005 {
		t.Fatalf("offering template by VMID: %d, %v", id, err)
	}
	if _, err := provisioners.MergeConfig(offering, `{"ipconfig0":"ip=10.0.0.5/24"}`, provisioners.PolicyFor(p, Type, []string{"ipconfig0"})); err != nil {
		t.Fatalf("allowed by the provider: %v", err)
	}
}
