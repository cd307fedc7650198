package main

// The load generator. By default it runs in a child process (this binary
// re-executed with the hidden first argument -loadgen), so that the
// server's CPU time can be measured alone with getrusage in the parent;
// -loadgen-mode=inprocess runs the same code on goroutines of the server's
// process (the old way: the figures then mix both).
//
// Protocol between the two, one line each:
//
//	parent → child stdin:  the loadSpec as JSON (agent seeds included: a
//	                       pipe, never argv or a file others could read)
//	child → parent stdout: "ready" (requests signed, connections open,
//	                       warm-up done)
//	parent → child stdin:  "go"
//	child → parent stdout: "done" (the timed phase is over), then the
//	                       loadResult as JSON
//
// Everything else the child has to say goes to stderr.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// loadgenArg is the hidden first argument that makes this binary the load
// generator child.
const loadgenArg = "-loadgen"

// loadAgent is one agent the load generator signs for.
type loadAgent struct {
	Seed     string `json:"seed"`     // hex Ed25519 seed (secret)
	Provider string `json:"provider"` // hex provider public key
}

// loadSpec is what the load generator is asked to do.
type loadSpec struct {
	Addr        string      `json:"addr"`
	Agents      []loadAgent `json:"agents"`
	Requests    int         `json:"requests"`
	Concurrency int         `json:"concurrency"`
	// VaryDetails: each heartbeat of an agent reports another
	// activeContracts (its status row changes every time). Otherwise an
	// agent reports the same details all run, as a real agent does between
	// contract changes and resource refreshes.
	VaryDetails bool `json:"varyDetails"`
}

// loadResult is what it reports about the timed phase.
type loadResult struct {
	Count     int           `json:"count"`
	Elapsed   time.Duration `json:"elapsedNs"`
	P50       time.Duration `json:"p50Ns"`
	P99       time.Duration `json:"p99Ns"`
	CPU       time.Duration `json:"cpuNs"` // the load generator process's user+system time over the timed phase (0 in process)
	Pid       int           `json:"pid"`
	InProcess bool          `json:"-"`
}

// phases is how the load generator tells the server's side where the timed
// phase starts and ends: ready is called after the warm-up and returns when
// the timed phase may start; done is called as soon as it has ended.
type phases struct {
	ready func() error
	done  func() error
}

// generateLoad signs every heartbeat (one warm-up per agent, then the timed
// ones), opens the connections, warms up, and drives the timed phase.
func generateLoad(spec loadSpec, ph phases, ownCPU bool) (*loadResult, error) {
	nAgents := len(spec.Agents)
	if nAgents == 0 || spec.Requests <= 0 || spec.Concurrency <= 0 {
		return nil, fmt.Errorf("load spec: %d agents, %d requests, %d in flight: all must be > 0", nAgents, spec.Requests, spec.Concurrency)
	}
	type agent struct {
		key      ed25519.PrivateKey
		pub      string
		provider string
	}
	agents := make([]agent, nAgents)
	for i, a := range spec.Agents {
		seed, err := hex.DecodeString(a.Seed)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("load spec: agent %d: seed is not %d hex bytes", i, ed25519.SeedSize)
		}
		k := ed25519.NewKeyFromSeed(seed)
		agents[i] = agent{k, identity.PublicHex(k), a.Provider}
	}

	// Pre-sign every heartbeat (fresh nonce and timestamp each) and
	// serialise it as raw HTTP/1.1: the load generator shares the machine
	// with the server, so it should take as little CPU as it can.
	wire := make([][]byte, nAgents+spec.Requests)
	for i := range wire {
		a := agents[i%nAgents]
		path := dcapi.APIPrefix + "/providers/" + a.provider + "/heartbeat"
		active := (i % nAgents) % 7
		if spec.VaryDetails {
			active = i % 7
		}
		body, _ := json.Marshal(dcapi.Heartbeat{Version: "0.9.0", ProvisionerType: "proxmox", Capabilities: []string{"vm"}, ActiveContracts: active})
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		nonce := uuid.NewString()
		h := http.Header{}
		h.Set(dcapi.HeaderTimestamp, ts)
		h.Set(dcapi.HeaderNonce, nonce)
		h.Set(dcapi.HeaderAgentPubkey, a.pub)
		h.Set(dcapi.HeaderSignature, identity.SignRequest(a.key, ts, nonce, "POST", path, body))
		h.Set("Content-Type", "application/json")
		var b strings.Builder
		fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, spec.Addr, len(body))
		for k, v := range h {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v[0])
		}
		b.WriteString("\r\n")
		b.Write(body)
		wire[i] = []byte(b.String())
	}

	// Warm up: open the connections and send every agent's first heartbeat
	// outside the count, so that the timed run sees a server in its steady
	// state (each agent's row exists, its delegation is cached), as a
	// server whose agents send a heartbeat a minute is.
	conns := make([]net.Conn, spec.Concurrency)
	for i := range conns {
		c, err := net.Dial("tcp", spec.Addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		conns[i] = c
	}
	if _, err := drive(conns, wire[:nAgents]); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := ph.ready(); err != nil {
		return nil, err
	}
	cpu0 := cpuTime()
	start := time.Now()
	lat, err := drive(conns, wire[nAgents:])
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	if err != nil {
		return nil, err
	}
	if err := ph.done(); err != nil {
		return nil, err
	}
	res := &loadResult{Count: len(lat), Elapsed: elapsed, Pid: os.Getpid()}
	if ownCPU {
		res.CPU = cpu
	}
	slices.Sort(lat)
	res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return res, nil
}

// loadgenMain is the child: spec on stdin, result on stdout (see the top
// of this file). It returns the exit code.
func loadgenMain(stdin io.Reader, stdout io.Writer) int {
	in := bufio.NewReaderSize(stdin, 1<<20)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "apibench load generator: reading the spec on stdin:", err)
		return 1
	}
	var spec loadSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		fmt.Fprintln(os.Stderr, "apibench load generator: the spec on stdin is not JSON:", err)
		return 1
	}
	ph := phases{
		ready: func() error {
			if _, err := io.WriteString(stdout, "ready\n"); err != nil {
				return err
			}
			l, err := in.ReadString('\n')
			if err != nil || l != "go\n" {
				return fmt.Errorf("waiting for go on stdin: got %q (%v)", l, err)
			}
			return nil
		},
		done: func() error {
			_, err := io.WriteString(stdout, "done\n")
			return err
		},
	}
	res, err := generateLoad(spec, ph, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apibench load generator:", err)
		return 1
	}
	b, _ := json.Marshal(res)
	if _, err := stdout.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "apibench load generator:", err)
		return 1
	}
	return 0
}

// loadgen runs the load generator, in a child process or on goroutines of
// this one.
type loadgen struct {
	inProcess bool
}

// run drives the load; before runs while the load generator is warmed up
// and idle (the verify ceiling is measured there), begin right before the
// timed phase starts and end as soon as the load generator says it is over
// (nothing else of this process runs between the two but the server).
func (lg loadgen) run(ctx context.Context, spec loadSpec, before, begin, end func()) (*loadResult, error) {
	if lg.inProcess {
		ph := phases{
			ready: func() error { before(); begin(); return nil },
			done:  func() error { end(); return nil },
		}
		res, err := generateLoad(spec, ph, false)
		if res != nil {
			res.InProcess = true
		}
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd, err := loadgenCmd(ctx)
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	waited := false
	defer func() {
		if !waited {
			cancel()
			_ = cmd.Wait()
		}
	}()
	out := bufio.NewReader(stdoutPipe)
	expect := func(want string) error {
		l, err := out.ReadString('\n')
		if err != nil || l != want+"\n" {
			return fmt.Errorf("load generator (pid %d) said %q instead of %q (%v); its stderr is above", cmd.Process.Pid, l, want, err)
		}
		return nil
	}
	b, _ := json.Marshal(spec)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("load generator: writing the spec: %w", err)
	}
	if err := expect("ready"); err != nil {
		return nil, err
	}
	before()
	begin()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return nil, err
	}
	err = expect("done")
	end()
	if err != nil {
		return nil, err
	}
	l, err := out.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("load generator: reading its result: %w", err)
	}
	var res loadResult
	if err := json.Unmarshal(l, &res); err != nil {
		return nil, fmt.Errorf("load generator: its result is not JSON: %w", err)
	}
	stdin.Close()
	waited = true
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return &res, nil
}

// loadgenCmd is this binary re-executed as the load generator: its only
// argument is the hidden -loadgen (secrets go through stdin).
func loadgenCmd(ctx context.Context) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("load generator: finding this binary to re-execute: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, loadgenArg)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// drive sends the requests over conns, one at a time on each, and returns
// each request's latency.
func drive(conns []net.Conn, wire [][]byte) ([]time.Duration, error) {
	lat := make([]time.Duration, len(wire))
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(conn, 4096)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(wire) {
					return
				}
				t0 := time.Now()
				if err := roundTrip(conn, br, wire[i]); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("heartbeat %d: %w", i, err) })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return lat, firstErr
}

// roundTrip writes one request and reads its response, which must be 200.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) error {
	if _, err := conn.Write(req); err != nil {
		return err
	}
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(status), "HTTP/1.1 200 ") {
		return fmt.Errorf("status %q", strings.TrimSpace(string(status)))
	}
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = br.Discard(n)
	return err
}
