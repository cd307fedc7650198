package status

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
)

// maxEventLine bounds one line of the event stream.
const maxEventLine = 1 << 20

// ErrNotRunning means nothing answers on the socket.
var ErrNotRunning = errors.New("dc-agent is not running")

// Client reads the status socket at Path.
type Client struct {
	Path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &Client{Path: path, hc: &http.Client{Transport: tr}}
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dc-agent/"+APIVersion+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("status socket %s: %s: %s", c.Path, resp.Status, b)
	}
	return resp, nil
}

// dialError explains the usual reasons a socket does not answer.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (no agent listening on %s); start it with: systemctl start dc-agent", ErrNotRunning, c.Path)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot open %s: permission denied; run as root or as a member of the dc-agent group", c.Path)
	}
	return fmt.Errorf("status socket %s: %w", c.Path, err)
}

// State fetches the live state.
func (c *Client) State(ctx context.Context) (State, error) {
	var st State
	resp, err := c.get(ctx, "/state")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("status socket %s: bad state: %w", c.Path, err)
	}
	return st, nil
}

// Events streams events after seq (0: the recent history first) to fn until
// ctx ends, the agent goes away (io.EOF) or fn returns an error.
func (c *Client) Events(ctx context.Context, since uint64, fn func(Event) error) error {
	q := ""
	if since > 0 {
		q = "?since=" + strconv.FormatUint(since, 10)
	}
	resp, err := c.get(ctx, "/events"+q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return ReadEvents(resp.Body, fn)
}

// ReadEvents decodes an NDJSON event stream. Lines that are not events are
// an error; unknown fields are ignored (newer agents may add some).
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxEventLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("bad event line: %w", err)
		}
		if ev.Kind == "" {
			return errors.New("bad event line: no kind")
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}
