package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
)

type serveFlags struct {
	listen        string
	logFormat     string
	logLevel      string
	maxBody       int64
	rateLimit     float64
	rateBurst     int
	unknownRate   float64
	unknownBurst  int
	replayCache   string
	lockTTL       time.Duration
	retryCooldown time.Duration
	maxAttempts   int
	grace         time.Duration
	refresh       time.Duration
	profile       string
	provTimeout   time.Duration
	gwDomain      string
	gwPrefix      string
	publicURL     string
}

func newServeCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API server (and the dashboard at /)",
		Long: `Run the API server. Migrations are applied on start. SIGINT/SIGTERM stop it
gracefully: long-polls answer at once, in-flight requests get --shutdown-grace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return serve(cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fl.StringVar(&f.profile, "profile", apiserver.ProfileDefault, "API to serve: default (PROTOCOL.md with dc-api's extensions) or live (as the live Decent Cloud API)")
	fl.DurationVar(&f.provTimeout, "provisioning-timeout", store.DefaultPolicy.ProvisioningTimeout, "live profile: fail a contract accepted or provisioning for longer than this")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug (every request), info, warn, error")
	fl.Int64Var(&f.maxBody, "max-body-bytes", 2<<20, "largest request body accepted")
	fl.Float64Var(&f.rateLimit, "rate-limit", 50, "requests per second allowed per key (negative: unlimited; in the live profile: no per-IP limit either)")
	fl.IntVar(&f.rateBurst, "rate-burst", 200, "burst allowed per key")
	fl.Float64Var(&f.unknownRate, "unknown-key-rate", 20, "requests per second allowed, all together, from keys this server does not know (no active delegation, not a registered provider) and to the unsigned setup endpoint (negative: unlimited)")
	fl.IntVar(&f.unknownBurst, "unknown-key-burst", 100, "burst allowed for unknown keys and setup requests, all together")
	fl.StringVar(&f.replayCache, "replay-cache", apiserver.ReplayCacheMemory, "where nonces are remembered: memory (this process) or database (shared by every dc-api on the database; default profile)")
	fl.DurationVar(&f.lockTTL, "lock-ttl", store.DefaultPolicy.LockTTL, "provisioning lock lifetime (renewable by its holder)")
	fl.DurationVar(&f.retryCooldown, "retry-cooldown", store.DefaultPolicy.RetryCooldown, "wait before a retryable failed contract is offered again")
	fl.IntVar(&f.maxAttempts, "max-attempts", store.DefaultPolicy.MaxAttempts, "provisioning attempts per contract")
	fl.DurationVar(&f.grace, "shutdown-grace", 10*time.Second, "how long a stop waits for in-flight requests")
	fl.DurationVar(&f.refresh, "dashboard-refresh", 10*time.Second, "dashboard self-refresh period")
	fl.StringVar(&f.gwDomain, "gateway-domain", apiserver.DefaultGatewayDomain, "domain of the gateway's DNS names <slug>.<dc_id>.<prefix>.<domain> (the live CF_DOMAIN)")
	fl.StringVar(&f.gwPrefix, "gateway-prefix", apiserver.DefaultGatewayPrefix, "prefix of the gateway's DNS names (the live CF_GW_PREFIX: gw, or dev-gw)")
	fl.StringVar(&f.publicURL, "public-url", os.Getenv("API_PUBLIC_URL"), "the server's public base URL, for gateway/register's acme-dns URL (env API_PUBLIC_URL; without it gateway/register is refused, as live)")
	return cmd
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: use text or json", format)
}

func serve(cmd *cobra.Command, g *globals, f *serveFlags) error {
	log, err := newLogger(f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	if f.maxAttempts < 1 {
		return usagef("--max-attempts must be at least 1")
	}
	if f.lockTTL < time.Second {
		return usagef("--lock-ttl must be at least 1s")
	}
	if f.profile != apiserver.ProfileDefault && f.profile != apiserver.ProfileLive {
		return usagef("--profile %q: use %s or %s", f.profile, apiserver.ProfileDefault, apiserver.ProfileLive)
	}
	switch {
	case f.replayCache != apiserver.ReplayCacheMemory && f.replayCache != apiserver.ReplayCacheDatabase:
		return usagef("--replay-cache %q: use %s or %s", f.replayCache, apiserver.ReplayCacheMemory, apiserver.ReplayCacheDatabase)
	case f.replayCache == apiserver.ReplayCacheDatabase && f.profile == apiserver.ProfileLive:
		return usagef("--replay-cache database: the live profile has no replay cache (as the live API)")
	}
	if f.provTimeout < time.Second {
		return usagef("--provisioning-timeout must be at least 1s")
	}
	ctx := cmd.Context()
	st, err := g.open(ctx, store.Options{Policy: store.Policy{LockTTL: f.lockTTL, RetryCooldown: f.retryCooldown, MaxAttempts: f.maxAttempts,
		ProvisioningTimeout: f.provTimeout}})
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := apiserver.New(apiserver.Config{
		Store: st, Logger: log, MaxBodyBytes: f.maxBody, RateLimit: f.rateLimit, RateBurst: f.rateBurst,
		UnknownKeyRate: f.unknownRate, UnknownKeyBurst: f.unknownBurst, ReplayCache: f.replayCache,
		Version: buildinfo.Version, DashboardRefresh: f.refresh, Profile: f.profile,
		GatewayDomain: f.gwDomain, GatewayPrefix: f.gwPrefix, PublicURL: f.publicURL,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	log.Info("dc-api listening", "addr", ln.Addr().String(), "db", st.Describe(), "version", buildinfo.Version, "profile", f.profile,
		"dashboard", "http://"+ln.Addr().String()+"/")
	err = srv.Serve(ctx, ln, f.grace)
	log.Info("dc-api stopped")
	return err
}
