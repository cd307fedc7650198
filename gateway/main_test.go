package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
)

// The integration tests run the gateway the way the agent does, in a
// process on the gateway host: the test binary re-executed inside the
// test's "host" network namespace (`ip netns exec`), one process per
// operation, so every step also starts from what the previous one left on
// disk and in the kernel, and a step can be SIGKILLed where a crash hurts.
//
// The child reads DC_GW_CHILD (the operation), DC_GW_ARGS, DC_GW_CONFIG
// (the [gateway] section as JSON) and DC_GW_ZONE (the DNS zone file).
func TestMain(m *testing.M) {
	if op := os.Getenv("DC_GW_CHILD"); op != "" {
		if err := runChild(op, strings.Fields(os.Getenv("DC_GW_ARGS"))); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(op string, args []string) error {
	var cfg config.GatewayConfig
	if err := json.Unmarshal([]byte(os.Getenv("DC_GW_CONFIG")), &cfg); err != nil {
		return err
	}
	zone := &zoneDNS{path: os.Getenv("DC_GW_ZONE"), suffix: cfg.GWPrefix + "." + cfg.Domain}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	emit := func(v any) {
		b, _ := json.Marshal(v)
		out.Write(append(b, '\n'))
		out.Flush()
	}
	hang := func() {
		fmt.Fprintln(out, "HANG")
		out.Flush()
		select {} // until the test kills the process
	}
	if op == "assign-hang-dns" {
		zone.beforeCreate = hang
	}
	ctx := context.Background()
	if op == "check" {
		h, err := LocalHost(ctx)
		if err != nil {
			return err
		}
		var vms []netip.Addr
		for _, a := range args[1:] {
			vms = append(vms, netip.MustParseAddr(a))
		}
		emit(append(CheckHost(h, cfg, args[0], vms), CheckServices(ctx, cfg)...))
		return nil
	}
	m, err := Open(ctx, cfg, zone, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	switch op {
	case "assign", "assign-hang-dns", "assign-hang":
		a, err := m.Assign(ctx, args[0], args[1])
		if err != nil {
			return err
		}
		emit(a)
		if op == "assign-hang" {
			hang() // killed between the gateway's work and the agent's report
		}
	case "release":
		return m.Release(ctx, args[0])
	case "reconcile":
		res, err := m.Reconcile(ctx, args)
		if err != nil {
			return err
		}
		emit(res)
	case "stats":
		s, err := m.Stats()
		if err != nil {
			return err
		}
		emit(s)
	case "list":
		emit(m.Assignments())
	case "bench":
		return runBench(ctx, m, args)
	default:
		return errors.New("unknown operation " + op)
	}
	return nil
}

// zoneDNS stands in for the API's DNS endpoint (the dc-api endpoint does
// not exist yet): a zone kept in a JSON file, with the live server's
// semantics — a create of an existing name is refused (Cloudflare refuses
// duplicates), a delete of a missing one succeeds.
type zoneDNS struct {
	path, suffix string
	// beforeCreate runs after the record is written and before the answer
	// (a crash there: the record exists, the gateway never learned it).
	beforeCreate func()

	mu      sync.Mutex
	mem     map[string]string // path == "": in memory (the benchmark)
	creates int
}

func (z *zoneDNS) load() (map[string]string, error) {
	if z.path == "" {
		if z.mem == nil {
			z.mem = map[string]string{}
		}
		return z.mem, nil
	}
	recs := map[string]string{}
	b, err := os.ReadFile(z.path)
	if errors.Is(err, os.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, err
	}
	return recs, json.Unmarshal(b, &recs)
}

func (z *zoneDNS) store(recs map[string]string) error {
	if z.path == "" {
		return nil
	}
	b, _ := json.Marshal(recs)
	return identity.WriteFileAtomic(z.path, b, 0o600)
}

func (z *zoneDNS) CreateRecord(_ context.Context, slug, dcID, publicIP string) (string, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	recs, err := z.load()
	if err != nil {
		return "", err
	}
	name := slug + "." + dcID + "." + z.suffix
	if _, ok := recs[name]; ok {
		return "", fmt.Errorf("Failed to create DNS record: Cloudflare API error (400): record %s already exists", name)
	}
	recs[name] = publicIP
	z.creates++
	if err := z.store(recs); err != nil {
		return "", err
	}
	if z.beforeCreate != nil {
		z.beforeCreate()
	}
	return name, nil
}

func (z *zoneDNS) DeleteRecord(_ context.Context, slug, dcID string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	recs, err := z.load()
	if err != nil {
		return err
	}
	delete(recs, slug+"."+dcID+"."+z.suffix)
	return z.store(recs)
}

// benchFigures is what the benchmark child measures.
type benchFigures struct {
	VMs          int           `json:"vms"`
	FillAll      time.Duration `json:"fillAll"`
	AddOne       time.Duration `json:"addOne"`
	ReconcileAll time.Duration `json:"reconcileAll"`
	RestoreAll   time.Duration `json:"restoreAll"`
	ReleaseOne   time.Duration `json:"releaseOne"`
	Rules        int           `json:"rules"`
	Routes       int           `json:"routes"`
}
