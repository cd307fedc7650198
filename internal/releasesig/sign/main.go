// Command sign writes a release's SHA256SUMS.sig (scripts/release.sh runs
// it): sign -key PRIVATE.pem -keys TRUSTED.pub DIR/SHA256SUMS. It refuses a
// signing key the trusted list does not hold, and prints the trusted keys
// as one comma-separated line for the release's binaries and installer.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/releasesig"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sign:", err)
		os.Exit(1)
	}
}

func run() error {
	keyPath := flag.String("key", "", "Ed25519 private key (PKCS#8 PEM, 0600)")
	keysPath := flag.String("keys", "", "the trusted public keys, one per line")
	check := flag.Bool("list", false, "only check the keys and print them as one line")
	flag.Parse()
	if *keysPath == "" || (!*check && (*keyPath == "" || flag.NArg() != 1)) {
		return fmt.Errorf("usage: sign -key PRIVATE.pem -keys TRUSTED.pub SHA256SUMS | sign -list -keys TRUSTED.pub [-key PRIVATE.pem]")
	}
	list, err := os.ReadFile(*keysPath)
	if err != nil {
		return err
	}
	keys, err := releasesig.ParseKeys(string(list))
	if err != nil {
		return fmt.Errorf("%s: %w", *keysPath, err)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%s lists no key; add the public half of the release key (openssl pkey -in KEY -pubout, the middle line)", *keysPath)
	}
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = releasesig.PublicKeyLine(k)
	}
	if *keyPath != "" {
		priv, err := releasesig.LoadPrivateKey(*keyPath)
		if err != nil {
			return err
		}
		sums := flag.Arg(0)
		if *check {
			sums = ""
		}
		var data []byte
		if sums != "" {
			if data, err = os.ReadFile(sums); err != nil {
				return err
			}
		}
		sig, err := releasesig.Sign(priv, keys, data)
		if err != nil {
			return err
		}
		if sums != "" {
			if err := identity.WriteFileAtomic(filepath.Join(filepath.Dir(sums), releasesig.SigName), sig, 0o644); err != nil {
				return err
			}
		}
	}
	fmt.Println(strings.Join(lines, ","))
	return nil
}
