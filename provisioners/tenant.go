package provisioners

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// Tenant requests (password resets, SSH key rotations) are carried out
// through a backend's own control channel: the QEMU guest agent, a cloud
// API, a container exec. Never by logging in to the tenant's machine.

// ErrHandedOff is returned (wrapped) by a backend that cannot carry out a
// tenant request itself and has told the provider to do it by hand (the
// manual backend): the agent reports nothing and does not ask again while
// the request stays pending.
var ErrHandedOff = errors.New("handed to the provider, who carries it out by hand")

// NotSupported is the error of a backend asked for a tenant request its
// API cannot carry out: permanent, and worded for the tenant.
func NotSupported(typ, what string) error {
	msg := fmt.Sprintf("%s is not supported by this provider's %s backend", what, typ)
	return &Error{Err: errors.New(msg), Tenant: msg}
}

// MaxSSHKeyLine bounds a tenant's SSH public key (an RSA-16384 key is
// about 2.8 kB; the live API stores what the tenant typed).
const MaxSSHKeyLine = 8 << 10

// CheckSSHKeyLine validates a tenant's new SSH public key and returns it
// as the one authorized_keys line the agent writes: "type base64 comment",
// without options (command=, from=, …) and without anything that could add
// a second line to the file. A key that does not qualify is a permanent
// error the tenant can read.
func CheckSSHKeyLine(s string) (string, error) {
	bad := func(why string) (string, error) {
		msg := "the new SSH key is not usable: " + why + "; give one OpenSSH public key line such as `ssh-ed25519 AAAA… you@host`"
		return "", &Error{Err: errors.New(msg), Tenant: msg}
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return bad("it is empty")
	case len(s) > MaxSSHKeyLine:
		return bad(fmt.Sprintf("it is longer than %d bytes", MaxSSHKeyLine))
	case strings.ContainsAny(s, "\r\n\x00"):
		return bad("it spans more than one line")
	}
	pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	switch {
	case err != nil:
		return bad("it is not an OpenSSH public key")
	case len(options) > 0:
		return bad("it carries authorized_keys options")
	case len(bytes.TrimSpace(rest)) > 0:
		return bad("it is followed by more text")
	}
	comment = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.TrimSpace(comment))
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	if comment != "" {
		line += " " + comment
	}
	return line, nil
}

// AddAuthorizedKey returns the content of an authorized_keys file with
// line (from CheckSSHKeyLine) added at the end, and whether anything
// changed: a key already in the file (the same type and key, whatever its
// comment or options) is not added twice, so repeating a rotation after a
// crash leaves one copy. Everything else in the file is kept as it is.
func AddAuthorizedKey(existing []byte, line string) ([]byte, bool) {
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return existing, false
	}
	for _, l := range bytes.Split(existing, []byte("\n")) {
		if pk, _, _, _, err := ssh.ParseAuthorizedKey(l); err == nil && bytes.Equal(pk.Marshal(), want.Marshal()) {
			return existing, false
		}
	}
	out := make([]byte, 0, len(existing)+len(line)+2)
	out = append(out, existing...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, line...)
	return append(out, '\n'), true
}
