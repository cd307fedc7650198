package hetzner

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// maxUserData is Hetzner's limit on user_data.
const maxUserData = 32 * 1024

// postProvisionPath is where cloud-init writes the offering's script.
const postProvisionPath = "/var/lib/dc-agent/post-provision.sh"

// cloudInit renders the cloud-config user_data of a contract. Contract data
// (the post-provision script) is only ever embedded base64-encoded, so no
// value can break out of the YAML. Hetzner itself installs the SSH key and
// sets the hostname to the server name.
func cloudInit(req provisioners.Request, hasKey bool) (string, error) {
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	fmt.Fprintf(&b, "# dc-agent contract %s\n", strings.ToLower(req.ContractID))
	if hasKey {
		// Key-only access: the requester got no password.
		b.WriteString("ssh_pwauth: false\n")
	} else {
		b.WriteString("ssh_pwauth: true\n")
	}
	if s := req.PostProvisionScript; strings.TrimSpace(s) != "" {
		if !strings.HasPrefix(s, "#!") {
			s = "#!/bin/sh\n" + s
		}
		b.WriteString("write_files:\n")
		fmt.Fprintf(&b, "  - path: %s\n    permissions: '0700'\n    owner: root:root\n    encoding: b64\n    content: %s\n",
			postProvisionPath, base64.StdEncoding.EncodeToString([]byte(s)))
		b.WriteString("runcmd:\n")
		fmt.Fprintf(&b, "  - [ %s ]\n", postProvisionPath)
	}
	if b.Len() > maxUserData {
		return "", provisioners.Permanent(fmt.Errorf("cloud-init user_data is %d bytes, over Hetzner's limit of %d; shorten the offering's post_provision_script", b.Len(), maxUserData))
	}
	return b.String(), nil
}
