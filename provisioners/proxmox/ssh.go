package proxmox

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// maxScriptOutput bounds what is kept of post_provision_script's output.
const maxScriptOutput = 64 << 10

// limitedBuffer keeps the last maxScriptOutput bytes.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	l.b.Write(p)
	if over := l.b.Len() - maxScriptOutput; over > 0 {
		l.b.Next(over)
	}
	return n, nil
}

// tail returns the last n lines.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// postKeyComment ends the post-provision key's line in a VM's sshkeys.
const postKeyComment = "dc-agent-post-provision"

// postKeyLine is the authorized_keys line of the post-provision key.
func postKeyLine(key ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key.PublicKey()))) + " " + postKeyComment
}

// removeKeyCmd takes the key whose base64 blob arrives on stdin out of the
// login user's authorized_keys (rewritten in place: owner and mode stay)
// and fails unless it is gone. The key never appears on the command line.
const removeKeyCmd = `k=$(cat); f="$HOME/.ssh/authorized_keys"
[ -n "$k" ] || exit 2
if [ -f "$f" ] && grep -qF -- "$k" "$f"; then
	grep -vF -- "$k" "$f" > "$f.dc-agent" || [ $? -eq 1 ] || exit 3
	cat "$f.dc-agent" > "$f" && rm -f "$f.dc-agent" || exit 4
fi
! grep -qF -- "$k" "$f" 2>/dev/null`

// runPostProvision runs the offering's script on the new VM over SSH as
// the cloud-init user, with the script on stdin (`sh -s`), so no contract
// data is ever interpolated into a command line. The VM is brand new, so
// its host key is trusted on first use and returned for pinning.
//
// The provider's post-provision key opens the VM only for the script: once
// it has run, the key is taken out of the user's authorized_keys over the
// same connection, and a failure to do so fails the provision. The VM's
// sshkeys setting keeps the line: changing cloud-init settings after the
// first boot gives the VM a new cloud-init instance-id, and at its next
// boot cloud-init would make new host keys and set the initial password
// again (the key it lists is not re-added while the instance-id stays).
func (p *Provisioner) runPostProvision(ctx context.Context, ip, script string) (string, error) {
	if ip == "" {
		return "", errors.New("post_provision_script: the VM has no IP address to connect to")
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(p.opts.SSHPort))
	var hostKey string
	cfg := &ssh.ClientConfig{
		User: p.cfg.CIUser,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(p.postKey)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			fp := ssh.FingerprintSHA256(key)
			if hostKey != "" && hostKey != fp {
				return fmt.Errorf("host key changed during provisioning (%s, then %s)", hostKey, fp)
			}
			hostKey = fp
			return nil
		},
		Timeout: 15 * time.Second,
	}
	deadline := p.opts.Now().Add(p.opts.SSHWait)
	var client *ssh.Client
	for {
		d := net.Dialer{Timeout: 15 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c, chans, reqs, herr := ssh.NewClientConn(conn, addr, cfg)
			if herr == nil {
				client = ssh.NewClient(c, chans, reqs)
				break
			}
			conn.Close()
			err = herr
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if !p.opts.Now().Before(deadline) {
			return "", fmt.Errorf("post_provision_script: cannot log in to %s as %s within %s: %v", addr, p.cfg.CIUser, p.opts.SSHWait, err)
		}
		if err := sleep(ctx, min(p.opts.IPWaitInterval, 2*time.Second)); err != nil {
			return "", err
		}
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", fmt.Errorf("post_provision_script: open SSH session: %w", err)
	}
	defer sess.Close()
	var out limitedBuffer
	sess.Stdout = &out
	sess.Stderr = &out
	sess.Stdin = strings.NewReader(script)
	done := make(chan error, 1)
	go func() { done <- sess.Run("sh -s") }()
	timer := time.NewTimer(p.opts.ScriptTimeout)
	defer timer.Stop()
	select {
	case err = <-done:
	case <-timer.C:
		_ = sess.Signal(ssh.SIGKILL)
		client.Close()
		return hostKey, fmt.Errorf("post_provision_script did not finish within %s; last output:\n%s", p.opts.ScriptTimeout, tail(out.b.String(), 20))
	case <-ctx.Done():
		client.Close()
		return hostKey, ctx.Err()
	}
	if err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return hostKey, fmt.Errorf("post_provision_script exited with status %d; last output:\n%s", ee.ExitStatus(), tail(out.b.String(), 20))
		}
		return hostKey, fmt.Errorf("post_provision_script: %w", err)
	}
	if err := removeKey(client, p.postKey.PublicKey()); err != nil {
		return hostKey, fmt.Errorf("remove the post-provision key from the VM after its script: %w", err)
	}
	return hostKey, nil
}

// removeKey runs removeKeyCmd for key in a new session of client.
func removeKey(client *ssh.Client, key ssh.PublicKey) error {
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	var out limitedBuffer
	sess.Stdout, sess.Stderr = &out, &out
	sess.Stdin = strings.NewReader(base64.StdEncoding.EncodeToString(key.Marshal()))
	if err := sess.Run(removeKeyCmd); err != nil {
		return fmt.Errorf("%v: %s", err, tail(out.b.String(), 5))
	}
	return nil
}
