package main

import (
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// envName is the environment variable that answers a flag:
// --host-key-fingerprint is DC_AGENT_HOST_KEY_FINGERPRINT.
func envName(flag string) string {
	return "DC_AGENT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv makes every flag of fs also answerable by its DC_AGENT_*
// environment variable (a flag on the command line wins), and says so in
// the help. Call it after defining the flags.
func bindEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		name := envName(f.Name)
		if !strings.Contains(f.Usage, name) {
			f.Usage += " (env " + name + ")"
		}
		if v, ok := os.LookupEnv(name); ok && v != "" {
			_ = f.Value.Set(v)
		}
	})
}

// stdinIsTerminal reports whether questions can be asked.
func stdinIsTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
