package cloudkit

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/go-crypt/crypt/algorithm/shacrypt"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// PostProvisionPath is where cloud-init writes the offering's script.
const PostProvisionPath = "/var/lib/dc-agent/post-provision.sh"

// UserData is what a contract's cloud-config says beyond what the cloud API
// itself sets up (SSH key, hostname).
type UserData struct {
	// Provider names the cloud in messages ("Hetzner").
	Provider string
	// MaxBytes is the API's limit on user data.
	MaxBytes int
	// HasKey: the requester logs in with an SSH key, so password logins
	// are switched off.
	HasKey bool
	// RootPasswordHash, if set, is the crypt(3) hash cloud-init sets as
	// root's password (for APIs that return no password of their own).
	RootPasswordHash string
}

// CloudConfig renders the cloud-config user data of a contract. Contract
// data (the post-provision script) is only ever embedded base64-encoded, so
// no value can break out of the YAML; the password hash is checked to be
// one (crypt alphabet only) before it is written.
func (u UserData) CloudConfig(req provisioners.Request) (string, error) {
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	fmt.Fprintf(&b, "# dc-agent contract %s\n", strings.ToLower(req.ContractID))
	if u.HasKey {
		// Key-only access: the requester got no password.
		b.WriteString("ssh_pwauth: false\n")
	} else {
		b.WriteString("ssh_pwauth: true\n")
	}
	if h := u.RootPasswordHash; h != "" {
		if !isCryptHash(h) {
			return "", fmt.Errorf("internal error: root password hash is not a crypt(3) hash")
		}
		b.WriteString("chpasswd:\n  expire: false\n  users:\n")
		fmt.Fprintf(&b, "    - name: root\n      password: '%s'\n      type: HASH\n", h)
	}
	if s := req.PostProvisionScript; strings.TrimSpace(s) != "" {
		if !strings.HasPrefix(s, "#!") {
			s = "#!/bin/sh\n" + s
		}
		b.WriteString("write_files:\n")
		fmt.Fprintf(&b, "  - path: %s\n    permissions: '0700'\n    owner: root:root\n    encoding: b64\n    content: %s\n",
			PostProvisionPath, base64.StdEncoding.EncodeToString([]byte(s)))
		b.WriteString("runcmd:\n")
		fmt.Fprintf(&b, "  - [ %s ]\n", PostProvisionPath)
	}
	if u.MaxBytes > 0 && b.Len() > u.MaxBytes {
		return "", provisioners.Permanent(fmt.Errorf("cloud-init user_data is %d bytes, over %s's limit of %d; shorten the offering's post_provision_script", b.Len(), u.Provider, u.MaxBytes))
	}
	return b.String(), nil
}

// isCryptHash reports whether h uses only the characters of a crypt(3)
// hash ($, digits, letters, ., /, =, and the rounds= parameter).
func isCryptHash(h string) bool {
	if !strings.HasPrefix(h, "$") {
		return false
	}
	for _, c := range h {
		if !(c == '$' || c == '.' || c == '/' || c == '=' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// RootPassword returns a random root password and its SHA-512 crypt(3)
// hash for cloud-init. 5000 rounds (the glibc default) suffice: the
// password is random (24 characters of a 57-letter alphabet, ~140 bits).
func RootPassword() (plain, hash string, err error) {
	plain, err = provisioners.RandomPassword(24)
	if err != nil {
		return "", "", err
	}
	h, err := shacrypt.New(shacrypt.WithVariant(shacrypt.VariantSHA512), shacrypt.WithIterations(shacrypt.IterationsDefaultOmitted))
	if err != nil {
		return "", "", err
	}
	d, err := h.Hash(plain)
	if err != nil {
		return "", "", err
	}
	return plain, d.Encode(), nil
}
