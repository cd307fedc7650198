package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// ShadowMatches reports whether user's crypt(3) hash in the content of an
// /etc/shadow matches pw, by hashing pw with the same method and salt with
// the host's busybox mkpasswd (the password goes on its stdin).
func ShadowMatches(shadow []byte, user, pw string) (bool, error) {
	var hash string
	sc := bufio.NewScanner(bytes.NewReader(shadow))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) > 1 && f[0] == user {
			hash = f[1]
		}
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[0] != "" {
		return false, fmt.Errorf("user %s has no crypt hash in /etc/shadow (%q)", user, hash)
	}
	method := map[string]string{"1": "md5", "5": "sha256", "6": "sha512"}[parts[1]]
	if method == "" {
		return false, fmt.Errorf("hash method $%s$ is not one busybox mkpasswd makes", parts[1])
	}
	cmd := exec.Command("busybox", "mkpasswd", "-m", method, "-S", parts[2], "-P", "0")
	cmd.Stdin = strings.NewReader(pw)
	out, err := cmd.Output()
	if err != nil {
		return false, fmt.Errorf("busybox mkpasswd: %w (make test-deps installs busybox-static)", err)
	}
	return strings.TrimSpace(string(out)) == hash, nil
}
