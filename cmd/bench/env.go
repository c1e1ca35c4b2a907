package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// The mock upstreams: short non-streamed replies, long streams paced one
// token per millisecond, and slow streams of one token a second (as long
// as the slow-stream scenario needs, slowTokens).
const (
	shortTokens  = 16
	streamTokens = 200
	streamTPS    = 1000
	slowTPS      = 1
)

// The public models the arcane site serves.
const (
	model16   = "bench-16"
	model200  = "bench-200"
	modelSlow = "bench-slow"
)

// environment is everything a run starts: a temp dir, the mocks, Caddy,
// and the arcane key.
type environment struct {
	dir       string
	pin       pinning
	procs     []*process
	caddyBin  string
	idleConns int

	mock16, mock200, mockSlow *process
	// caddy is the Caddy every scenario measures but the slow streams,
	// which start fresh ones.
	caddy *caddyServer

	serverAllowed string // Cpus_allowed_list of Caddy
	mockProcs     int    // GOMAXPROCS the mocks report
	caddyVersion  string
}

// newEnvironment starts the mocks and Caddy and makes the key. On error the
// returned environment (if any) still needs close.
func newEnvironment(ctx context.Context, o *options, pin pinning) (*environment, error) {
	caddyBin, err := filepath.Abs(o.caddy)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(caddyBin); err != nil || st.IsDir() {
		return nil, fmt.Errorf("no Caddy binary at %s (build it: go build -o bin/caddy ./cmd/caddy)", o.caddy)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "arcane-bench-")
	if err != nil {
		return nil, err
	}
	env := &environment{dir: dir, pin: pin, caddyBin: caddyBin, idleConns: o.caddyIdleConns}

	env.mock16, err = env.startMock(ctx, self, "mock-16", shortTokens, 0)
	if err != nil {
		return env, err
	}
	env.mock200, err = env.startMock(ctx, self, "mock-200", streamTokens, streamTPS)
	if err != nil {
		return env, err
	}
	env.mockSlow, err = env.startMock(ctx, self, "mock-slow", slowTokens(o), slowTPS)
	if err != nil {
		return env, err
	}

	env.caddyVersion = caddyVersion(ctx, caddyBin)
	env.caddy, err = env.startCaddy(ctx, "caddy")
	if err != nil {
		return env, err
	}
	env.serverAllowed = allowedCPUs(strconv.Itoa(env.caddy.proc.pid()))
	return env, nil
}

// caddyServer is one Caddy the run started, and the arcane key made in it.
type caddyServer struct {
	proc    *process
	params  caddyfileParams
	key     string
	account string // the id of the key's account
}

// startCaddy starts a Caddy of its own ports, storage and data folders,
// with the generated Caddyfile, waits for it to load, and makes an
// account and key in it. On error the process, if started, is among the
// environment's, to be stopped by close.
func (e *environment) startCaddy(ctx context.Context, name string) (*caddyServer, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	c := &caddyServer{params: caddyfileParams{
		Admin: ports[0], Plain16: ports[1], Plain200: ports[2], PlainSlow: ports[3], Arcane: ports[4],
		Mock16: e.mock16.addr, Mock200: e.mock200.addr, MockSlow: e.mockSlow.addr,
		Storage:   filepath.Join(e.dir, name, "bench.db"),
		IdleConns: e.idleConns,
	}}
	home := filepath.Join(e.dir, name)
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(home, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(c.params.caddyfile()), 0o600); err != nil {
		return nil, err
	}
	c.proc, err = e.start(name, e.pin.command(e.caddyBin, "run", "--config", cfg, "--adapter", "caddyfile"),
		[]string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "XDG_DATA_HOME=" + filepath.Join(home, "data")}, nil)
	if err != nil {
		return nil, err
	}
	if err := e.waitAdmin(ctx, c); err != nil {
		return c, err
	}
	if c.key, err = e.makeKey(ctx, c); err != nil {
		return c, err
	}
	return c, nil
}

// process is one child process.
type process struct {
	name  string
	cmd   *exec.Cmd
	log   string
	stdin *os.File // the parent's end of the child's standard input
	addr  string   // a mock's listen address
	procs int      // a mock's GOMAXPROCS
	done  chan struct{}
	err   error // from Wait, once done is closed
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs argv with its output in a log file of the temp dir. The child
// gets its own process group (a Ctrl-C reaches only this program, which
// then stops the children in order) and is killed by the kernel should
// this program die first.
func (e *environment) start(name string, argv, extraEnv []string, stdout *os.File) (*process, error) {
	logPath := filepath.Join(e.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer inR.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		inW.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, stdin: inW, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	e.procs = append(e.procs, p)
	return p, nil
}

// startMock runs this program in -serve-mock mode and waits for its ready
// line.
func (e *environment) startMock(ctx context.Context, self, name string, tokens int, tps float64) (*process, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outR.Close()
	argv := e.pin.command(self, "-serve-mock", "-addr", "127.0.0.1:0",
		"-tokens", strconv.Itoa(tokens), "-tps", strconv.FormatFloat(tps, 'g', -1, 64))
	p, err := e.start(name, argv, nil, outW)
	outW.Close()
	if err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(outR).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		var addr string
		if _, err := fmt.Sscanf(strings.TrimPrefix(s, mockReady), "%s gomaxprocs %d", &addr, &p.procs); err != nil {
			return nil, fmt.Errorf("%s did not start (%q); see %s", name, strings.TrimSpace(s), p.log)
		}
		p.addr = addr
		e.mockProcs = p.procs
		return p, nil
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s did not start within 10s", name)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close stops every child, Caddy first (so it does not log the mocks
// going away); then removes the temp dir.
func (e *environment) close() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.stop(e.procs[i])
	}
	e.procs = nil
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// stop stops a child, unless it has exited, with SIGTERM and then, after
// 5s, SIGKILL.
func (e *environment) stop(p *process) {
	p.stdin.Close()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// dumpLogs shows the end of each child's log, for a failed run.
func (e *environment) dumpLogs(w io.Writer) {
	for _, p := range e.procs {
		data, err := os.ReadFile(p.log)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		state := "running"
		if p.exited() {
			state = fmt.Sprintf("exited: %v", p.err)
		}
		fmt.Fprintf(w, "--- %s (%s), last %d log lines:\n%s\n", p.name, state, len(lines), strings.Join(lines, "\n"))
	}
}

// freePorts finds n distinct free loopback ports. Another program could
// take one before Caddy binds it; Caddy then fails to start, and says so.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func caddyVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return v
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

// waitAdmin waits until Caddy's admin endpoint answers and the config is
// loaded, or Caddy exits.
func (e *environment) waitAdmin(ctx context.Context, c *caddyServer) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/config/", c.params.Admin)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.proc.exited() {
			return fmt.Errorf("%s exited at start: %v", c.proc.name, c.proc.err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := adminClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"arcane"`)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("caddy's admin endpoint did not come up within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// makeKey creates an account with a large balance and a key for it through
// a Caddy's admin API, notes the account's id in c, and returns the key.
func (e *environment) makeKey(ctx context.Context, c *caddyServer) (string, error) {
	var acct struct {
		ID string `json:"id"`
	}
	if err := e.admin(ctx, c, "/arcane/accounts", `{"name":"bench","balance":"1000000"}`, &acct); err != nil {
		return "", err
	}
	c.account = acct.ID
	var key struct {
		Key string `json:"key"`
	}
	if err := e.admin(ctx, c, "/arcane/accounts/"+acct.ID+"/keys", `{"name":"bench"}`, &key); err != nil {
		return "", err
	}
	if !strings.HasPrefix(key.Key, "ak_") {
		return "", fmt.Errorf("admin API made no ak_ key: %q", key.Key)
	}
	return key.Key, nil
}

func (e *environment) admin(ctx context.Context, c *caddyServer, path, body string, out any) error {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", c.params.Admin, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	return nil
}

// caddyfileParams fill the generated Caddyfile.
type caddyfileParams struct {
	Admin, Plain16, Plain200, PlainSlow, Arcane int
	Mock16, Mock200, MockSlow                   string // host:port
	Storage                                     string
	// IdleConns, when above 0, sets the stock sites'
	// keepalive_idle_conns_per_host.
	IdleConns int
}

// caddyfileTemplate is the benchmark's Caddy: a stock reverse_proxy site
// in front of each mock, and the arcane chain as Caddyfile.example has it.
// Access logs are off (Caddy's default), everything binds to loopback.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin 127.0.0.1:{{.Admin}}
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	grace_period 1s

	arcane {
		storage {{.Storage}}
		provider up {
			type openai
			base_url http://{{.Mock16}}/v1
		}
		provider upstream-stream {
			type openai
			base_url http://{{.Mock200}}/v1
		}
		provider upstream-slow {
			type openai
			base_url http://{{.MockSlow}}/v1
		}
		model ` + model16 + ` {
			deploy up m16
			price input 1 output 2
		}
		model ` + model200 + ` {
			deploy upstream-stream m200
			price input 1 output 2
		}
		model ` + modelSlow + ` {
			deploy upstream-slow mslow
			price input 1 output 2
		}
	}
}

# Stock Caddy: the non-stream mock.
http://127.0.0.1:{{.Plain16}} {
	reverse_proxy {{.Mock16}}{{template "transport" .}}
}

# Stock Caddy: the streaming mock (reverse_proxy flushes text/event-stream
# as it arrives).
http://127.0.0.1:{{.Plain200}} {
	reverse_proxy {{.Mock200}}{{template "transport" .}}
}

# Stock Caddy: the slow-stream mock.
http://127.0.0.1:{{.PlainSlow}} {
	reverse_proxy {{.MockSlow}}{{template "transport" .}}
}

# arcane, as in Caddyfile.example.
http://127.0.0.1:{{.Arcane}} {
	route {
		arcane_auth
		# Budgets far above the load: the limiter's cost, never a 429.
		arcane_limit {
			requests 1000000000 1m
			tokens 1000000000000 1m
		}
		arcane_balance
		handle /v1/chat/completions {
			arcane_proxy
		}
	}
}
{{define "transport"}}{{if gt .IdleConns 0}} {
		transport http {
			keepalive_idle_conns_per_host {{.IdleConns}}
		}
	}{{end}}{{end}}`))

func (p caddyfileParams) caddyfile() string {
	var b strings.Builder
	if err := caddyfileTemplate.Execute(&b, p); err != nil {
		panic(err) // the template and its fields are fixed
	}
	return b.String()
}
