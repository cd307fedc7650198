// Package docker provisions contracts as containers on a Docker Engine
// (github.com/moby/moby/client): one container per contract from the
// configured image, with the offering's CPU and memory limits, SSH (port
// 22 in the container) published on a host port from a configured range,
// and labels carrying the contract id so a restarted agent finds it again.
//
// The image must run sshd itself; the agent only installs the requester's
// key as /root/.ssh/authorized_keys (or sets a root password with chpasswd
// when the contract has no key) before handing it over.
//
// Tenants share the host's kernel, so this backend is for tenants who
// accept that; within it, each container is held apart from the others and
// from the host: a process limit (pids_limit), only the capabilities an
// SSH server and a root login need (no NET_RAW, MKNOD, SETFCAP, SETPCAP),
// no-new-privileges, a bridge network of its own (unless [docker] network
// names one), and a disk limit of the contract's storage where the storage
// driver can enforce one (overlay2 on xfs with pquota, btrfs, zfs; said in
// the log once where it cannot).
package docker

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/hostinfo"
)

// Type is the registry name.
const Type = config.TypeDocker

// Labels on every container the agent creates. Only containers labelled
// managed are ever stopped or removed.
const (
	LabelManaged   = "dc-agent.managed"
	LabelContract  = "dc-agent.contract-id"
	LabelSSHPort   = "dc-agent.ssh-port"
	LabelStorageGB = "dc-agent.storage-gb"
	LabelOffering  = "dc-agent.offering-id"
)

// Defaults for offerings that leave a size at 0.
const (
	DefaultCPUCores = 1
	DefaultMemoryMB = 1024
	// DefaultPidsLimit caps a container's processes unless pids_limit
	// says otherwise.
	DefaultPidsLimit = 1024
)

// tenantCaps are the only capabilities a tenant's container keeps: what
// sshd (privilege separation, chroot, login) and root administering its
// own files need. Docker's default set also has NET_RAW (raw sockets:
// spoofing on the host's networks), MKNOD, SETFCAP and SETPCAP.
var tenantCaps = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE"}

var sshPort = network.MustParsePort("22/tcp")

// Options tune the backend; zero values are production defaults.
type Options struct {
	// StopTimeout is how long a stop waits before killing (default 10s).
	StopTimeout time.Duration
	// StartWait is how long a started container must keep running before
	// it counts as up (default 1s; tests use less).
	StartWait time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// Provisioner is the Docker backend.
type Provisioner struct {
	cfg        config.DockerConfig
	cli        *client.Client
	opts       Options
	log        *slog.Logger
	publicHost string
	publishIP  netip.Addr

	pullMu sync.Mutex

	portMu   sync.Mutex
	reserved map[int]bool      // ports chosen for containers being created
	bad      map[int]time.Time // ports that failed at start, avoided until then

	// noDiskLimit is set once the daemon's storage driver refused a size.
	noDiskLimit atomic.Bool
}

// NewFactory returns a registry factory using opts.
func NewFactory(opts Options) provisioners.Factory {
	return func(pc config.ProvisionerConfig, deps provisioners.Deps) (provisioners.Provisioner, error) {
		if pc.Docker == nil {
			return nil, errors.New("[provisioner.docker] section is missing")
		}
		if opts.Logger == nil {
			opts.Logger = deps.Logger
		}
		return New(*pc.Docker, opts)
	}
}

// Factory is the production factory.
var Factory = NewFactory(Options{})

// New builds the backend. It does not contact the daemon (Ping does).
func New(cfg config.DockerConfig, opts Options) (*Provisioner, error) {
	if cfg.Image == "" {
		return nil, errors.New("docker image is not configured; set image in [provisioner.docker]")
	}
	if cfg.Socket == "" {
		cfg.Socket = config.DefaultDockerSocket
	}
	if cfg.SSHPortRangeStart == 0 && cfg.SSHPortRangeEnd == 0 {
		cfg.SSHPortRangeStart, cfg.SSHPortRangeEnd = 20000, 20999
	}
	if cfg.SSHPortRangeStart < 1 || cfg.SSHPortRangeEnd > 65535 || cfg.SSHPortRangeStart > cfg.SSHPortRangeEnd {
		return nil, fmt.Errorf("ssh port range %d..%d is not valid; set ssh_port_range_start <= ssh_port_range_end within 1..65535", cfg.SSHPortRangeStart, cfg.SSHPortRangeEnd)
	}
	if cfg.PublishIP == "" {
		cfg.PublishIP = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(cfg.PublishIP)
	if err != nil {
		return nil, fmt.Errorf("publish_ip %q is not an IP address", cfg.PublishIP)
	}
	if cfg.RestartPolicy == "" {
		cfg.RestartPolicy = "unless-stopped"
	}
	if cfg.PullTimeoutSecond <= 0 {
		cfg.PullTimeoutSecond = 600
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.StartWait <= 0 {
		opts.StartWait = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	host := cfg.Socket
	if !strings.Contains(host, "://") {
		host = "unix://" + host
	}
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	public := cfg.PublicHost
	if public == "" && !ip.IsUnspecified() {
		public = ip.String()
	}
	if public == "" {
		public = hostIPv4()
	}
	if public == "" {
		cli.Close()
		return nil, errors.New("cannot tell which address users reach containers on; set public_host (or publish_ip) in [provisioner.docker]")
	}
	return &Provisioner{
		cfg: cfg, cli: cli, opts: opts, log: opts.Logger.With("provisioner", Type),
		publicHost: public, publishIP: ip, reserved: map[int]bool{}, bad: map[int]time.Time{},
	}, nil
}

// hostIPv4 is the first global unicast IPv4 address of this host.
func hostIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// Type implements provisioners.Provisioner.
func (p *Provisioner) Type() string { return Type }

// Features implements provisioners.Provisioner.
func (p *Provisioner) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true, Inventory: true, Pause: true, ResetPassword: true, RotateSSHKey: true}
}

// Close releases the client.
func (p *Provisioner) Close() error { return p.cli.Close() }

// Ping checks that the daemon answers.
func (p *Provisioner) Ping(ctx context.Context) error {
	if _, err := p.cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("docker daemon at %s does not answer: %w", p.cfg.Socket, err)
	}
	return nil
}

// ContainerName is the deterministic container name of a contract.
func ContainerName(contractID string) string { return provisioners.InstanceName(contractID) }

// hostname is the container's hostname: "dc-" and 60 hex characters,
// because a hostname is at most 64 bytes.
func hostname(contractID string) string { return ContainerName(contractID)[:63] }

func isContractID(s string) bool { return provisioners.ContractIDFromName("dc-"+s) == s }

// Provision implements provisioners.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	cid := strings.ToLower(strings.TrimSpace(req.ContractID))
	if !isContractID(cid) {
		return provisioners.Instance{}, provisioners.Permanent(fmt.Errorf("contract id %q is not 64 hex characters", req.ContractID))
	}
	req.ContractID = cid
	keyLine := strings.TrimSpace(req.RequesterSSHPubkey)
	if keyLine != "" {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(keyLine)); err != nil {
			return provisioners.Instance{}, provisioners.Permanent(fmt.Errorf("the requester's SSH key is not a valid public key line (%v); the requester must set a key like \"ssh-ed25519 AAAA...\"", err))
		}
	} else if !req.WantPassword {
		return provisioners.Instance{}, provisioners.Permanent(errors.New("the contract has no SSH key and no root password can be sealed for the requester; the requester must add an SSH key"))
	}

	name := ContainerName(cid)
	req.Step("looking for an existing container")
	existing, err := p.inspect(ctx, name)
	if err != nil {
		return provisioners.Instance{}, provisioners.Retryable(fmt.Errorf("inspect container %s: %w", name, err))
	}
	if existing != nil {
		inst, ok, err := p.resume(ctx, req, existing)
		if err != nil || ok {
			return inst, err
		}
	}

	req.Step("checking image " + p.cfg.Image)
	if err := p.ensureImage(ctx); err != nil {
		return provisioners.Instance{}, err
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		inst, again, err := p.create(ctx, req, name)
		if err == nil && !again {
			return inst, nil
		}
		lastErr = err
		if !again {
			break
		}
		p.log.Warn("creating the container again", "contract", cid, "err", err)
	}
	if lastErr == nil {
		lastErr = provisioners.Retryable(fmt.Errorf("container %s kept appearing half-made; will retry", name))
	}
	return provisioners.Instance{}, lastErr
}

// create makes and starts the container on a fresh port. again is true
// when another attempt may work (the port turned out to be taken, or an
// interrupted attempt's container was in the way and got removed).
func (p *Provisioner) create(ctx context.Context, req provisioners.Request, name string) (inst provisioners.Instance, again bool, err error) {
	port, release, err := p.reservePort(ctx, req.ContractID)
	if err != nil {
		return inst, false, err
	}
	defer release()

	cores := req.CPUCores
	if cores <= 0 {
		cores = DefaultCPUCores
	}
	memMB := req.MemoryMB
	if memMB <= 0 {
		memMB = DefaultMemoryMB
	}
	labels := map[string]string{
		LabelManaged:  "true",
		LabelContract: req.ContractID,
		LabelSSHPort:  strconv.Itoa(port),
	}
	if req.StorageGB > 0 {
		labels[LabelStorageGB] = strconv.FormatInt(req.StorageGB, 10)
	}
	if req.OfferingID != "" {
		labels[LabelOffering] = req.OfferingID
	}
	pids := int64(p.cfg.PidsLimit)
	hc := &container.HostConfig{
		Resources: container.Resources{
			NanoCPUs:  int64(cores) * 1e9,
			Memory:    memMB << 20,
			PidsLimit: &pids,
		},
		PortBindings:  network.PortMap{sshPort: {{HostIP: p.publishIP, HostPort: strconv.Itoa(port)}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(p.cfg.RestartPolicy)},
		CapDrop:       []string{"ALL"},
		CapAdd:        tenantCaps,
		SecurityOpt:   []string{"no-new-privileges:true"},
	}
	if req.StorageGB > 0 && !p.noDiskLimit.Load() {
		hc.StorageOpt = map[string]string{"size": strconv.FormatInt(req.StorageGB, 10) + "G"}
	}
	if p.cfg.Network != "" {
		hc.NetworkMode = container.NetworkMode(p.cfg.Network)
	} else {
		req.Step("creating the contract's network")
		if err := p.ensureNetwork(ctx, req.ContractID); err != nil {
			return inst, false, err
		}
		hc.NetworkMode = container.NetworkMode(ContainerName(req.ContractID))
	}
	req.Step(fmt.Sprintf("creating container %s (SSH on port %d)", name, port))
	opts := client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        p.cfg.Image,
			Hostname:     hostname(req.ContractID),
			Labels:       labels,
			ExposedPorts: network.PortSet{sshPort: {}},
		},
		HostConfig: hc,
	}
	res, err := p.cli.ContainerCreate(ctx, opts)
	if err != nil && hc.StorageOpt != nil && isNoDiskLimit(err) {
		if !p.noDiskLimit.Swap(true) {
			p.log.Warn("the docker storage driver cannot limit a container's disk (it can on overlay2 over xfs with pquota, btrfs, zfs); contracts' storage sizes are recorded but not enforced", "err", err)
		}
		hc.StorageOpt = nil
		res, err = p.cli.ContainerCreate(ctx, opts)
	}
	if err != nil {
		if cerrdefs.IsConflict(err) {
			// Created meanwhile under our name: an earlier attempt.
			if ex, ierr := p.inspect(ctx, name); ierr == nil && ex != nil {
				inst, ok, err := p.resume(ctx, req, ex)
				return inst, !ok && err == nil, err
			}
		}
		p.removeNetwork(ctx, req.ContractID)
		return inst, false, p.classify("create container "+name, err)
	}
	id := res.ID

	inst, err = p.setUp(ctx, req, id)
	if err != nil {
		p.remove(ctx, id, req.ContractID)
		if isPortTaken(err) {
			p.markBad(port)
			return provisioners.Instance{}, true, provisioners.Retryable(fmt.Errorf("start container %s: host port %d is taken: %w", name, port, err))
		}
		return provisioners.Instance{}, false, err
	}
	return inst, false, nil
}

// setUp installs access (key or password), starts the container, waits
// until it keeps running and runs the post-provision script.
func (p *Provisioner) setUp(ctx context.Context, req provisioners.Request, id string) (provisioners.Instance, error) {
	keyLine := strings.TrimSpace(req.RequesterSSHPubkey)
	if keyLine != "" {
		req.Step("installing the SSH key")
		if err := p.copyAuthorizedKeys(ctx, id, keyLine); err != nil {
			return provisioners.Instance{}, err
		}
	}
	req.Step("starting the container")
	if _, err := p.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return provisioners.Instance{}, p.classify("start container", err)
	}
	ct, err := p.waitRunning(ctx, id)
	if err != nil {
		return provisioners.Instance{}, err
	}
	inst := p.instanceFromInspect(ct)
	if keyLine == "" {
		req.Step("setting the root password")
		pw, err := p.setPassword(ctx, id)
		if err != nil {
			return provisioners.Instance{}, err
		}
		inst.RootPassword = pw
	}
	if s := req.PostProvisionScript; strings.TrimSpace(s) != "" {
		req.Step("running the post-provision script")
		// The script goes in on stdin: never on a command line.
		out, code, err := p.exec(ctx, id, []string{"/bin/sh", "-s"}, []byte(s))
		if err != nil || code != 0 {
			return provisioners.Instance{}, provisioners.Retryable(fmt.Errorf("post-provision script failed (exit %d, %v): %s", code, err, tail(out)))
		}
		if out, code, err := p.exec(ctx, id, []string{"/bin/sh", "-c", "mkdir -p " + path.Dir(doneMarker) + " && : > " + doneMarker}, nil); err != nil || code != 0 {
			return provisioners.Instance{}, provisioners.Retryable(fmt.Errorf("record the post-provision script's success (exit %d, %v): %s", code, err, tail(out)))
		}
	}
	return inst, nil
}

// resume takes over a container found for the contract (an earlier
// attempt interrupted by a crash). ok is false when the container could not
// be trusted to be complete and was removed: the caller creates a fresh one.
func (p *Provisioner) resume(ctx context.Context, req provisioners.Request, ct *container.InspectResponse) (inst provisioners.Instance, ok bool, err error) {
	if ct.Config == nil || ct.Config.Labels[LabelContract] != req.ContractID || ct.Config.Labels[LabelManaged] != "true" {
		return inst, false, provisioners.Permanent(fmt.Errorf("a container named %s exists but is not labelled as this contract's; remove or rename it", ContainerName(req.ContractID)))
	}
	status := "unknown"
	if ct.State != nil {
		status = string(ct.State.Status)
	}
	p.log.Info("found existing container for contract", "contract", req.ContractID, "container", ct.ID, "status", status)
	startOver := func(why string) (provisioners.Instance, bool, error) {
		p.log.Warn("removing the interrupted attempt's container to start over", "contract", req.ContractID, "container", ct.ID, "why", why)
		p.remove(ctx, ct.ID, req.ContractID)
		return provisioners.Instance{}, false, nil
	}
	if ct.State == nil || !ct.State.Running || ct.State.Restarting {
		// Never (fully) started: whether the key was copied is unknown.
		return startOver("not running (" + status + ")")
	}
	if strings.TrimSpace(req.PostProvisionScript) != "" {
		if _, code, err := p.exec(ctx, ct.ID, []string{"/bin/sh", "-c", "test -e " + doneMarker}, nil); err != nil || code != 0 {
			// The script may not have run, or not to the end.
			return startOver("post-provision script not known to have completed")
		}
	}
	inst = p.instanceFromInspect(ct)
	if strings.TrimSpace(req.RequesterSSHPubkey) == "" {
		// The first attempt's password was lost with it.
		pw, err := p.setPassword(ctx, ct.ID)
		if err != nil {
			return startOver(err.Error())
		}
		inst.RootPassword = pw
	}
	return inst, true, nil
}

// doneMarker is created in the container once the post-provision script
// succeeded, so a resumed attempt knows it need not start over.
const doneMarker = "/var/lib/dc-agent/provisioned"

// setPassword gives root a fresh random password with chpasswd.
func (p *Provisioner) setPassword(ctx context.Context, id string) (string, error) {
	pw, err := randomPassword()
	if err != nil {
		return "", err
	}
	out, code, err := p.exec(ctx, id, []string{"chpasswd"}, []byte("root:"+pw+"\n"))
	if err != nil || code != 0 {
		return "", provisioners.Permanent(fmt.Errorf("set the root password with chpasswd in image %s failed (exit %d, %v): %s; use an image with chpasswd or require SSH keys", p.cfg.Image, code, err, tail(out)))
	}
	return pw, nil
}

// waitRunning waits until the container has been running for StartWait,
// so an image whose command exits at once is caught here.
func (p *Provisioner) waitRunning(ctx context.Context, id string) (*container.InspectResponse, error) {
	deadline := time.Now().Add(p.opts.StartWait)
	for {
		ct, err := p.inspect(ctx, id)
		if err != nil {
			return nil, p.classify("inspect container", err)
		}
		if ct == nil {
			return nil, provisioners.Retryable(errors.New("the container disappeared right after start"))
		}
		st := ct.State
		if st == nil || !st.Running || st.Restarting {
			code, status := 0, "unknown"
			if st != nil {
				code, status = st.ExitCode, string(st.Status)
			}
			logs := p.logsTail(ctx, id)
			return nil, provisioners.Retryable(fmt.Errorf("the container stopped right after start (status %s, exit code %d) — does image %s run a long-lived command such as sshd? output: %s", status, code, p.cfg.Image, logs))
		}
		if !time.Now().Before(deadline) {
			return ct, nil
		}
		t := time.NewTimer(min(50*time.Millisecond, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, p.classify("wait for container", ctx.Err())
		case <-t.C:
		}
	}
}

func (p *Provisioner) logsTail(ctx context.Context, id string) string {
	rc, err := p.cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: "20"})
	if err != nil {
		return "(no logs)"
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, _ = stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 64<<10))
	return tail(buf.String())
}

// tail keeps the end of command output for error messages.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 500 {
		s = "..." + s[len(s)-500:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// copyAuthorizedKeys puts the key into /root/.ssh of a created container.
func (p *Provisioner) copyAuthorizedKeys(ctx context.Context, id, keyLine string) error {
	if err := p.putAuthorizedKeys(ctx, id, []byte(keyLine+"\n"), "root/", "root/.ssh/"); err != nil {
		return p.classify("install SSH key in container", err)
	}
	return nil
}

// putAuthorizedKeys copies body in as /root/.ssh/authorized_keys, root:root
// 0600, with the directories dirs (root/…/, made or set 0700) before it.
func (p *Provisioner) putAuthorizedKeys(ctx context.Context, id string, body []byte, dirs ...string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	var hs []*tar.Header
	for _, d := range dirs {
		hs = append(hs, &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o700, ModTime: now})
	}
	hs = append(hs, &tar.Header{Typeflag: tar.TypeReg, Name: "root/.ssh/authorized_keys", Mode: 0o600, Size: int64(len(body)), ModTime: now})
	for _, h := range hs {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, err := p.cli.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: "/", Content: &buf})
	return err
}

// exec runs cmd in a running container with stdin, returning combined
// output and exit code.
func (p *Provisioner) exec(ctx context.Context, id string, cmd []string, stdin []byte) (string, int, error) {
	ex, err := p.cli.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true, User: "root"})
	if err != nil {
		return "", -1, err
	}
	att, err := p.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return "", -1, err
	}
	defer att.Close()
	if _, err := att.Conn.Write(stdin); err != nil {
		return "", -1, err
	}
	if err := att.CloseWrite(); err != nil {
		return "", -1, err
	}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&out, &out, io.LimitReader(att.Reader, 1<<20))
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		<-done
		return out.String(), -1, ctx.Err()
	}
	if err != nil {
		return out.String(), -1, err
	}
	for {
		in, err := p.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return out.String(), -1, err
		}
		if !in.Running {
			return out.String(), in.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return out.String(), -1, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func randomPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ensureImage pulls the configured image if the daemon lacks it.
func (p *Provisioner) ensureImage(ctx context.Context) error {
	p.pullMu.Lock()
	defer p.pullMu.Unlock()
	_, err := p.cli.ImageInspect(ctx, p.cfg.Image)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return p.classify("inspect image "+p.cfg.Image, err)
	}
	p.log.Info("pulling image", "image", p.cfg.Image)
	pctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.PullTimeoutSecond)*time.Second)
	defer cancel()
	resp, err := p.cli.ImagePull(pctx, p.cfg.Image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(pctx)
		resp.Close()
	}
	if err != nil {
		return provisioners.Retryable(fmt.Errorf("pull image %s (pull_timeout_seconds = %d): %w; check the image name and the host's registry access, or load the image with docker load", p.cfg.Image, p.cfg.PullTimeoutSecond, err))
	}
	return nil
}

// reservePort picks the SSH host port of a new container: starting at a
// point derived from the contract id (so a contract tends to get the same
// port), the first port in the range that no managed container uses, no
// other container publishes, no in-flight provision holds and nothing on
// the host listens on. The reservation lasts until release; by then the
// container carries the port in its label.
func (p *Provisioner) reservePort(ctx context.Context, cid string) (int, func(), error) {
	// Listing under the lock: a reservation is released only once its
	// container exists, so every pick sees all earlier ones.
	p.portMu.Lock()
	defer p.portMu.Unlock()
	list, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return 0, nil, p.classify("list containers", err)
	}
	used := map[int]bool{}
	for _, c := range list.Items {
		if n, ok := portFromLabel(c.Labels[LabelSSHPort]); ok {
			used[n] = true
		}
		for _, ps := range c.Ports {
			used[int(ps.PublicPort)] = true
		}
	}
	lo, hi := p.cfg.SSHPortRangeStart, p.cfg.SSHPortRangeEnd
	size := hi - lo + 1
	sum := sha256.Sum256([]byte(cid))
	off := int(binary.BigEndian.Uint64(sum[:8]) % uint64(size))
	for i := range size {
		port := lo + (off+i)%size
		if used[port] || p.reserved[port] || p.opts.Now().Before(p.bad[port]) || !p.hostPortFree(port) {
			continue
		}
		p.reserved[port] = true
		return port, func() {
			p.portMu.Lock()
			delete(p.reserved, port)
			p.portMu.Unlock()
		}, nil
	}
	return 0, nil, provisioners.Retryable(fmt.Errorf("all %d SSH ports in %d..%d are in use; widen ssh_port_range_start/ssh_port_range_end", size, lo, hi))
}

// markBad keeps a port that failed at start out of the picks for a minute
// (the daemon holds it for something the container list did not show).
func (p *Provisioner) markBad(port int) {
	p.portMu.Lock()
	p.bad[port] = p.opts.Now().Add(time.Minute)
	p.portMu.Unlock()
}

// hostPortFree reports whether nothing listens on the publish address.
func (p *Provisioner) hostPortFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(p.publishIP.String(), strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// isPortTaken recognises the daemon's port conflict errors at start.
func isPortTaken(err error) bool {
	s := err.Error()
	return strings.Contains(s, "port is already allocated") || strings.Contains(s, "address already in use")
}

// portFromLabel parses the ssh-port label (labels can be edited by anyone
// with daemon access, so it is checked).
func portFromLabel(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return n, true
}

func (p *Provisioner) inspect(ctx context.Context, idOrName string) (*container.InspectResponse, error) {
	res, err := p.cli.ContainerInspect(ctx, idOrName, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &res.Container, nil
}

// remove stops and removes a container with its volumes and the
// contract's network, even if ctx is done.
func (p *Provisioner) remove(ctx context.Context, id, cid string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.StopTimeout+30*time.Second)
	defer cancel()
	if err := p.stopRemove(ctx, id, cid); err != nil {
		p.log.Error("could not remove the container of a failed provision; reconcile will report it", "container", id, "err", err)
	}
}

func (p *Provisioner) stopRemove(ctx context.Context, id, cid string) error {
	secs := int(p.opts.StopTimeout.Seconds())
	if _, err := p.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
		p.log.Warn("stop failed; removing with force", "container", id, "err", err)
	}
	if _, err := p.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	p.removeNetwork(ctx, cid)
	return nil
}

// ensureNetwork makes the contract's own bridge network (named like its
// container) unless it exists: a tenant's container shares no network with
// another tenant's, so it reaches the others only where anyone could, on
// their published ports. Docker's rules drop traffic between networks.
func (p *Provisioner) ensureNetwork(ctx context.Context, cid string) error {
	name := ContainerName(cid)
	res, err := p.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	switch {
	case err == nil:
		if res.Network.Labels[LabelContract] != cid || res.Network.Labels[LabelManaged] != "true" {
			return provisioners.Permanent(fmt.Errorf("a docker network named %s exists but is not labelled as this contract's; remove it (docker network rm %s)", name, name))
		}
		return nil
	case !cerrdefs.IsNotFound(err):
		return p.classify("inspect network "+name, err)
	}
	_, err = p.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
		Driver: "bridge",
		Labels: map[string]string{LabelManaged: "true", LabelContract: cid},
	})
	if err != nil && strings.Contains(err.Error(), "address pool") {
		return provisioners.Retryable(fmt.Errorf("create network %s: %w; every contract gets a network of its own: give the daemon more address pools (/etc/docker/daemon.json: \"default-address-pools\": [{\"base\": \"10.200.0.0/16\", \"size\": 28}]) or set network in [provisioner.docker]", name, err))
	}
	if err != nil && !cerrdefs.IsConflict(err) {
		return p.classify("create network "+name, err)
	}
	return nil
}

// removeNetwork removes the contract's network, if the backend made one.
func (p *Provisioner) removeNetwork(ctx context.Context, cid string) {
	if p.cfg.Network != "" || !isContractID(cid) {
		return
	}
	name := ContainerName(cid)
	if _, err := p.cli.NetworkRemove(ctx, name, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		p.log.Warn("could not remove the contract's network", "network", name, "err", err)
	}
}

// isNoDiskLimit recognises a storage driver refusing a size limit.
func isNoDiskLimit(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "quota") || strings.Contains(s, "storage-opt") || strings.Contains(s, "storage opt")
}

// Terminate implements provisioners.Provisioner: stop, then remove with
// volumes. Only managed containers are touched.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	id := strings.TrimSpace(externalID)
	if id == "" {
		return provisioners.Permanent(errors.New("empty container id"))
	}
	ct, err := p.inspect(ctx, id)
	if err != nil {
		return p.classify("inspect container "+id, err)
	}
	if ct == nil {
		return nil
	}
	if ct.Config == nil || ct.Config.Labels[LabelManaged] != "true" {
		return provisioners.Permanent(fmt.Errorf("container %s (%s) has no %s=true label, so dc-agent did not create it; refusing to remove it", id, strings.TrimPrefix(ct.Name, "/"), LabelManaged))
	}
	if err := p.stopRemove(ctx, ct.ID, ct.Config.Labels[LabelContract]); err != nil {
		return p.classify("terminate", err)
	}
	return nil
}

// HealthCheck implements provisioners.Provisioner from inspect: running
// (and not failing its own HEALTHCHECK) is healthy, uptime since StartedAt.
func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	ct, err := p.inspect(ctx, externalID)
	if err != nil {
		return provisioners.Health{Status: provisioners.Unknown, Reason: err.Error()}, p.classify("inspect container", err)
	}
	if ct == nil {
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "container " + externalID + " no longer exists"}, nil
	}
	return healthFromState(ct.State, p.opts.Now()), nil
}

func healthFromState(st *container.State, now time.Time) provisioners.Health {
	if st == nil {
		return provisioners.Health{Status: provisioners.Unknown, Reason: "docker reported no state"}
	}
	switch {
	case st.Restarting:
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "container is restarting (its command keeps exiting)"}
	case st.Paused:
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "container is paused"}
	case !st.Running:
		reason := fmt.Sprintf("container is %s (exit code %d)", st.Status, st.ExitCode)
		if st.OOMKilled {
			reason += ", killed for exceeding its memory limit"
		}
		if st.Error != "" {
			reason += ": " + st.Error
		}
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: reason}
	}
	h := provisioners.Health{Status: provisioners.Healthy}
	if started, err := time.Parse(time.RFC3339Nano, st.StartedAt); err == nil && !started.IsZero() && started.Year() > 1 {
		h.UptimeSeconds = int64(max(0, now.Sub(started).Seconds()))
	}
	if st.Health != nil && st.Health.Status == container.Unhealthy {
		h.Status = provisioners.Unhealthy
		h.Reason = fmt.Sprintf("the image's HEALTHCHECK fails (%d times in a row)", st.Health.FailingStreak)
	}
	return h
}

// GetInstance implements provisioners.Provisioner.
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	cid := strings.ToLower(strings.TrimSpace(contractID))
	if !isContractID(cid) {
		return nil, fmt.Errorf("contract id %q is not 64 hex characters", contractID)
	}
	ct, err := p.inspect(ctx, ContainerName(cid))
	if err != nil {
		return nil, p.classify("inspect container", err)
	}
	if ct == nil || ct.Config == nil || ct.Config.Labels[LabelContract] != cid || ct.Config.Labels[LabelManaged] != "true" {
		return nil, nil
	}
	inst := p.instanceFromInspect(ct)
	return &inst, nil
}

// List implements provisioners.Provisioner: every managed container.
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	f := make(client.Filters).Add("label", LabelManaged+"=true")
	list, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, p.classify("list containers", err)
	}
	out := make([]provisioners.Instance, 0, len(list.Items))
	for _, c := range list.Items {
		cid := c.Labels[LabelContract]
		if !isContractID(cid) {
			p.log.Warn("managed container has no valid contract label; skipping it", "container", c.ID)
			continue
		}
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		port, _ := portFromLabel(c.Labels[LabelSSHPort])
		out = append(out, provisioners.Instance{
			ExternalID: c.ID, ContractID: cid, Name: name, IPAddress: p.publicHost, SSHPort: port,
			Status: string(c.State), CreatedAt: time.Unix(c.Created, 0),
			AdditionalDetails: map[string]any{"provider": "docker", "image": c.Image},
		})
	}
	return out, nil
}

// instanceFromInspect converts an inspected container.
func (p *Provisioner) instanceFromInspect(ct *container.InspectResponse) provisioners.Instance {
	inst := provisioners.Instance{
		ExternalID: ct.ID,
		Name:       strings.TrimPrefix(ct.Name, "/"),
		IPAddress:  p.publicHost,
		AdditionalDetails: map[string]any{
			"provider":       "docker",
			"container_name": strings.TrimPrefix(ct.Name, "/"),
		},
	}
	if ct.Config != nil {
		if cid := ct.Config.Labels[LabelContract]; isContractID(cid) {
			inst.ContractID = cid
		}
		inst.SSHPort, _ = portFromLabel(ct.Config.Labels[LabelSSHPort])
		inst.AdditionalDetails["image"] = ct.Config.Image
	}
	if ct.HostConfig != nil {
		if inst.SSHPort == 0 {
			for _, b := range ct.HostConfig.PortBindings[sshPort] {
				if n, ok := portFromLabel(b.HostPort); ok {
					inst.SSHPort = n
				}
			}
		}
		inst.AdditionalDetails["cpu_cores"] = float64(ct.HostConfig.NanoCPUs) / 1e9
		inst.AdditionalDetails["memory_mb"] = ct.HostConfig.Memory >> 20
	}
	if ct.State != nil {
		inst.Status = string(ct.State.Status)
	}
	if t, err := time.Parse(time.RFC3339Nano, ct.Created); err == nil {
		inst.CreatedAt = t
	}
	return inst
}

// Resources implements provisioners.Inventory from the daemon's info:
// logical CPUs (Docker cannot tell physical cores), memory, and — for a
// daemon on this machine (a unix socket) — the CPU model, the memory not
// in use and the disk holding Docker's root directory, read as the live
// Rust agent does (dc-agent/src/provisioner/docker.rs collect_resources).
// Containers have no VM templates and no GPU passthrough: both lists are
// empty.
func (p *Provisioner) Resources(ctx context.Context) (provisioners.Resources, error) {
	info, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return provisioners.Resources{}, p.classify("docker info", err)
	}
	in := info.Info
	res := provisioners.Resources{
		CPUThreads: in.NCPU,
		MemoryMB:   in.MemTotal >> 20,
		Nodes:      []string{in.Name},
	}
	res.MemoryFreeMB = res.MemoryMB
	if local := !strings.Contains(p.cfg.Socket, "://") || strings.HasPrefix(p.cfg.Socket, "unix://"); local {
		res.CPUModel = hostinfo.CPUModel()
		if mb, ok := hostinfo.MemAvailableMB(); ok {
			res.MemoryFreeMB = min(mb, res.MemoryMB)
		}
		root := cmp.Or(in.DockerRootDir, "/var/lib/docker")
		if total, avail, ok := hostinfo.DiskGB(root); ok {
			res.StoragePools = []provisioners.StoragePool{{Name: root, Type: cmp.Or(in.Driver, "unknown"), TotalGB: total, AvailGB: avail}}
		}
	}
	return res, nil
}

// classify wraps a daemon error with what was being done and a hint.
func (p *Provisioner) classify(op string, err error) error {
	var pe *provisioners.Error
	if errors.As(err, &pe) {
		return err
	}
	switch {
	case client.IsErrConnectionFailed(err):
		return provisioners.Retryable(fmt.Errorf("%s: cannot reach the docker daemon at %s (is it running, and may the agent's user use the socket?): %w", op, p.cfg.Socket, err))
	case cerrdefs.IsInvalidArgument(err):
		return provisioners.Permanent(fmt.Errorf("%s: docker rejected the request: %w", op, err))
	case errors.Is(err, context.DeadlineExceeded):
		return provisioners.Retryable(fmt.Errorf("%s: timed out: %w", op, err))
	}
	return provisioners.Retryable(fmt.Errorf("%s: %w", op, err))
}

// TestOptions are Options for tests and benchmarks: short start wait and
// stop timeout.
func TestOptions() Options {
	return Options{StopTimeout: 2 * time.Second, StartWait: 100 * time.Millisecond}
}

// Register adds the production factory to r.
func Register(r *provisioners.Registry) { r.Register(Type, Factory) }
