package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresServer is a throwaway PostgreSQL cluster: initdb in a temp dir,
// the postmaster a child of this process on a free 127.0.0.1 port (trust
// auth, user "postgres", unix socket in the same dir). If the test binary
// dies, the kernel stops the postmaster (parent-death signal), so a crashed
// test leaks nothing but its temp dir.
type PostgresServer struct {
	Dir  string // cluster and socket directory
	Port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
	seq  atomic.Int64
}

// PostgresOptions tune StartPostgres.
type PostgresOptions struct {
	// Durable keeps fsync and synchronous commit on (benchmarks). Tests run
	// with them off: faster, and a test cluster never survives a crash.
	Durable bool
	// Settings are extra "-c name=value" server settings.
	Settings []string
}

// runAs returns the credential to run PostgreSQL binaries with: they refuse
// to run as root, so under root they run as the "postgres" user (or nobody).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

// pgBinary finds a PostgreSQL server binary by name.
func pgBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name); len(m) > 0 {
		return m[len(m)-1], nil
	}
	return "", fmt.Errorf("%s is not installed (run: make test-deps)", name)
}

// StartPostgres creates and starts a cluster. Stop it with Stop.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*PostgresServer, error) {
	initdb, err := pgBinary("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := pgBinary("postgres")
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dc-pg-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*PostgresServer, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
	}
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	// A port chosen here may be taken before the postmaster binds it; retry
	// a few times with a fresh one.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		args := []string{"-D", data, "-p", strconv.Itoa(port), "-h", "127.0.0.1", "-k", dir,
			"-c", "max_connections=300", "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
			"-c", "logging_collector=off", "-c", "listen_addresses=127.0.0.1"}
		if !opts.Durable {
			args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
		}
		for _, s := range opts.Settings {
			args = append(args, "-c", s)
		}
		p := &PostgresServer{Dir: dir, Port: port, done: make(chan struct{}), log: &bytes.Buffer{}}
		p.cmd = exec.Command(postgres, args...)
		p.cmd.Dir = dir
		p.cmd.Stdout = &syncWriter{w: p.log}
		p.cmd.Stderr = p.cmd.Stdout
		// SIGQUIT is PostgreSQL's immediate shutdown: it also ends the
		// backends, so nothing outlives a crashed test binary.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := p.cmd.Start(); err != nil {
			return fail(fmt.Errorf("start postgres: %w", err))
		}
		go func() { _ = p.cmd.Wait(); close(p.done) }()
		if err := p.waitReady(ctx, 30*time.Second); err != nil {
			p.kill()
			if attempt < 4 && bytes.Contains(p.logBytes(), []byte("could not bind")) {
				continue
			}
			return fail(fmt.Errorf("postgres did not start: %v\n%s", err, p.logBytes()))
		}
		return p, nil
	}
	return fail(errors.New("postgres: no free port after 5 attempts"))
}

func (p *PostgresServer) logBytes() []byte {
	if w, ok := p.cmd.Stdout.(*syncWriter); ok {
		w.mu.Lock()
		defer w.mu.Unlock()
		return bytes.Clone(p.log.Bytes())
	}
	return nil
}

func (p *PostgresServer) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return errors.New("postmaster exited")
		default:
		}
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DSN is the connection URL of database db.
func (p *PostgresServer) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// CreateDatabase creates a fresh database and returns its DSN.
func (p *PostgresServer) CreateDatabase(ctx context.Context, name string) (string, error) {
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0 STRATEGY FILE_COPY"); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.DSN(name), nil
}

// DropDatabase drops a database, disconnecting its sessions.
func (p *PostgresServer) DropDatabase(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// Stop shuts the cluster down (fast shutdown, then kill) and removes its
// directory.
func (p *PostgresServer) Stop() error {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
	return os.RemoveAll(p.Dir)
}

func (p *PostgresServer) kill() {
	// The postmaster leads its own process group: this ends the backends too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

var shared struct {
	mu  sync.Mutex
	srv *PostgresServer
	err error
}

// SharedPostgres returns the test binary's one PostgreSQL cluster, starting
// it on first use. A package that uses it stops it in TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testutil.StopSharedPostgres()
//		os.Exit(code)
//	}
//
// Missing PostgreSQL binaries fail the test under `make test` and skip it
// otherwise.
func SharedPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil && shared.err == nil {
		if _, err := pgBinary("initdb"); err != nil {
			Unavailable(t, err.Error())
			return nil
		}
		shared.srv, shared.err = StartPostgres(context.Background(), PostgresOptions{})
	}
	if shared.err != nil {
		t.Fatalf("start PostgreSQL: %v", shared.err)
	}
	return shared.srv
}

// StopSharedPostgres stops the cluster SharedPostgres started, if any.
func StopSharedPostgres() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		_ = shared.srv.Stop()
		shared.srv = nil
	}
}

// PostgresDB creates a fresh database in the shared cluster for this test,
// dropped when the test ends, and returns its DSN.
func PostgresDB(t testing.TB) string {
	t.Helper()
	p := SharedPostgres(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), p.seq.Add(1))
	dsn, err := p.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.DropDatabase(context.Background(), name); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return dsn
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncWriter serialises writes from the postmaster's stdout and stderr.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
