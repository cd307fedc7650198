package main

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/identity"
)

func goVersion() string { return runtime.Version() }

// loadRequesterKey reads a requester's Ed25519 key: any provider key form, or
// an unencrypted OpenSSH ed25519 private key.
func loadRequesterKey(path string) (ed25519.PrivateKey, error) {
	if err := identity.CheckSecretFileMode(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.Contains(string(b), "OPENSSH PRIVATE KEY") {
		k, err := ssh.ParseRawPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(*ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s is a %T key; sealed credentials need an ed25519 key", path, k)
		}
		return *ek, nil
	}
	k, _, err := identity.ParseMainKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
