// Command bench is the load benchmark behind `make bench`: it measures what
// arcane costs on top of stock Caddy, on loopback, with nothing but this
// machine.
//
// One run starts three mock upstreams (upstream/mock served on real
// sockets, as child processes of this very binary in its hidden
// -serve-mock mode), one Caddy (the -caddy binary) with a generated
// Caddyfile serving a plain reverse_proxy site per mock and an arcane
// site, and an account and key made through the admin API. It then drives
// three targets with the same requests: the mock itself (direct), stock
// Caddy's reverse_proxy (caddy) and the arcane chain (arcane), interleaved
// round by round so drift in the machine hits all three alike, and prints
// a table with the differences per scenario:
//
//   - non-stream and stream, closed loops of concurrent workers;
//   - non-stream and stream, open loops: requests started on a fixed
//     schedule whatever the answers do, for latencies under a steady load;
//   - slow streams: thousands of streams of one chunk a second held open
//     at once, each target on a Caddy of its own, for memory per stream;
//   - settlement: the billing store's durable settlements per second, in
//     this process.
//
// At the end it judges issue 9's targets on these numbers (PASS, FAIL or
// not measured). Every child process is stopped at the end, on failure and
// on Ctrl-C too.
//
// When taskset exists and the machine has two CPUs or more, the load
// generator (this process, re-executed under taskset) runs on the first
// CPU and Caddy and the mocks on the second, so client and server do not
// steal each other's time.
//
// Usage:
//
//	go build -o bin/caddy ./cmd/caddy && go run ./cmd/bench -caddy bin/caddy [-quick] [-json out.json]
//
// It exits 0 when every target answered with at most 1% errors, whatever
// the targets table says (it is a benchmark, not a test), 1 when one did
// not, 2 when the setup failed, and 130 when interrupted.
//
// With -soak (make soak) it runs issue 9's soak instead, in the same
// environment: arcane's maximum non-stream rate measured as above, then
// arcane alone at half that rate, open loop, for -soak-duration (10
// minutes), non-stream requests and one in 200 a paced stream, Caddy's
// memory and goroutines read every few seconds; then the audit and the
// books through the admin API. It prints a time series and PASS or FAIL
// per criterion (see soak.go), and exits 1 when one fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	caddy             string
	rounds            int
	openRounds        int
	duration          time.Duration
	warmup            time.Duration
	concurrency       int
	streamConcurrency int
	openDuration      time.Duration
	rate              float64
	streamRate        float64
	slowStreams       int
	slowHold          time.Duration
	quick             bool
	jsonOut           string
	noPin             bool
	caddyIdleConns    int
	profileDir        string
	soak              bool
	soakDuration      time.Duration
	soakRate          float64
	only              map[string]bool // the scenarios to run; nil: all

	// The hidden mock mode.
	serveMock bool
	addr      string
	tokens    int
	tps       float64
}

func parseFlags(args []string) (*options, error) {
	o := new(options)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.caddy, "caddy", "bin/caddy", "the Caddy binary to measure (with the arcane modules)")
	fs.IntVar(&o.rounds, "rounds", 3, "measurement rounds; each round measures every target once, in turn")
	fs.IntVar(&o.openRounds, "open-rounds", 5, "measurement rounds of the open-loop scenarios, whose targets are a p99: 5 rounds of 5s at 200/s make it the 50th worst of 5,000")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of one measurement window")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up per scenario and target, before the first round")
	fs.IntVar(&o.concurrency, "concurrency", 64, "concurrent workers in the non-stream scenario")
	fs.IntVar(&o.streamConcurrency, "stream-concurrency", 64, "concurrent streams in the streaming scenario")
	fs.DurationVar(&o.openDuration, "open-duration", 5*time.Second, "length of one measurement window of the open-loop scenarios")
	fs.Float64Var(&o.rate, "rate", 200, "requests started per second in the open-loop non-stream scenario")
	fs.Float64Var(&o.streamRate, "stream-rate", 100, "streams started per second in the open-loop streaming scenario")
	fs.IntVar(&o.slowStreams, "slow-streams", 5000, "concurrent streams of one chunk a second in the slow-stream scenario (0: skip it)")
	fs.DurationVar(&o.slowHold, "slow-hold", 10*time.Second, "how long the slow streams are held open once all are opened")
	fs.BoolVar(&o.quick, "quick", false, "a smoke run of about a minute: 1 round of 2s, 0.5s warm-up, 1000 slow streams held 3s")
	fs.StringVar(&o.jsonOut, "json", "", "also write the raw numbers to this file")
	fs.BoolVar(&o.noPin, "no-pin", false, "do not pin processes to CPUs with taskset")
	fs.StringVar(&o.profileDir, "profile", "",
		"after the rounds, profile Caddy's CPU for one extra window per scenario of caddy and arcane (not counted), into this directory")
	fs.BoolVar(&o.soak, "soak", false,
		"run the soak instead of the benchmark: arcane at half its measured maximum rate for -soak-duration, then check memory, goroutines, errors and the books")
	fs.DurationVar(&o.soakDuration, "soak-duration", 10*time.Minute, "length of the soak's load (at least 30s)")
	fs.Float64Var(&o.soakRate, "soak-rate", 0, "the soak's requests per second (0: half the measured maximum)")
	fs.IntVar(&o.caddyIdleConns, "caddy-idle-conns", 0,
		"keepalive_idle_conns_per_host for the stock reverse_proxy sites (0: Caddy's default, 32)")

	only := fs.String("only", "",
		"run only these scenarios, comma-separated: non-stream, stream, non-stream-open, stream-open, slow, settle (the targets of the others are not measured)")

	fs.BoolVar(&o.serveMock, "serve-mock", false, "internal: serve the mock upstream and nothing else")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "internal: the mock's listen address")
	fs.IntVar(&o.tokens, "tokens", 16, "internal: the mock's reply length in tokens")
	fs.Float64Var(&o.tps, "tps", 0, "internal: the mock's tokens per second (0: unpaced)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *only != "" {
		o.only = make(map[string]bool)
		for _, name := range strings.Split(*only, ",") {
			switch name {
			case scenarioNonStream, scenarioStream, scenarioNonStreamOpen, scenarioStreamOpen, scenarioSlow, scenarioSettle:
				o.only[name] = true
			default:
				return nil, fmt.Errorf("-only: unknown scenario %q", name)
			}
		}
	}
	if o.quick {
		o.rounds, o.openRounds, o.duration, o.openDuration, o.warmup = 1, 1, 2*time.Second, 2*time.Second, 500*time.Millisecond
		o.slowStreams, o.slowHold = 1000, 3*time.Second
	}
	if o.rounds < 1 || o.openRounds < 1 || o.duration <= 0 || o.openDuration <= 0 || o.warmup < 0 || o.concurrency < 1 || o.streamConcurrency < 1 ||
		!(o.rate > 0) || !(o.streamRate > 0) || o.caddyIdleConns < 0 || o.slowStreams < 0 || o.slowHold <= 0 {
		return nil, errors.New("-rounds, -open-rounds, -duration, -open-duration, -concurrency, -stream-concurrency, -rate, -stream-rate and -slow-hold must be positive, -warmup, -caddy-idle-conns and -slow-streams not negative")
	}
	if o.soak && (o.soakDuration < soakMinDuration || o.soakRate < 0) {
		return nil, fmt.Errorf("-soak-duration must be at least %s, -soak-rate not negative", soakMinDuration)
	}
	return o, nil
}

// The two measurements that are not load scenarios, as -only names them.
const (
	scenarioSlow   = "slow"
	scenarioSettle = "settle"
)

// runs reports whether the run measures the named scenario.
func (o *options) runs(name string) bool { return o.only == nil || o.only[name] }

// Exit codes.
const (
	exitOK          = 0
	exitTooManyErrs = 1
	exitSoakFailed  = 1 // -soak: a criterion failed
	exitSetup       = 2
	exitInterrupted = 130
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(exitOK)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(exitSetup)
	}
	if o.serveMock {
		if err := serveMock(o.addr, o.tokens, o.tps); err != nil {
			fmt.Fprintln(os.Stderr, "bench -serve-mock:", err)
			os.Exit(exitSetup)
		}
		return
	}
	pin := pinSelf(o.noPin) // may re-execute this program and not return

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o, pin)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, "bench: interrupted; all child processes stopped")
		code = exitInterrupted
	}
	os.Exit(code)
}

// setupError is a failure before or around measuring: exit 2.
type setupError struct{ err error }

func (e setupError) Error() string { return e.err.Error() }

// run does the whole benchmark and returns the exit code. Whatever happens,
// including a panic in the load generator, its deferred cleanup stops every
// child process before it returns.
func run(ctx context.Context, o *options, pin pinning) (code int) {
	began := time.Now()
	fileLimit := raiseFileLimit() // before any child starts: they inherit it
	env, err := newEnvironment(ctx, o, pin)
	if env != nil {
		defer env.close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		fmt.Fprintln(os.Stderr, "bench: setup:", err)
		if env != nil {
			env.dumpLogs(os.Stderr)
		}
		return exitSetup
	}
	if o.soak {
		return runSoak(ctx, o, pin, env, began)
	}
	setup := time.Since(began)

	rep := &report{
		machine:        newMachine(pin, env),
		MockProcs:      env.mockProcs,
		CaddyIdleConns: o.caddyIdleConns,
		FileLimit:      fileLimit.Cur,
		Rounds:         o.rounds,
		OpenRounds:     o.openRounds,
		Duration:       o.duration.String(),
		OpenDuration:   o.openDuration.String(),
		Warmup:         o.warmup.String(),
	}
	rep.printHeader(os.Stdout)
	fmt.Printf("setup: %s (mocks, caddy, account and key)\n\n", setup.Round(time.Millisecond))

	b := newBencher(env)
	scenarios := []scenario{nonStreamScenario(o.concurrency), streamScenario(o.streamConcurrency),
		nonStreamOpenScenario(o.rate), streamOpenScenario(o.streamRate)}
	for _, sc := range scenarios {
		if !o.runs(sc.Name) {
			continue
		}
		res, err := b.measure(ctx, sc, o)
		if err != nil {
			if ctx.Err() != nil {
				return exitInterrupted
			}
			fmt.Fprintln(os.Stderr, "bench:", err)
			var se setupError
			if errors.As(err, &se) {
				env.dumpLogs(os.Stderr)
				return exitSetup
			}
			return exitTooManyErrs
		}
		rep.Scenarios = append(rep.Scenarios, res)
		res.print(os.Stdout)
	}
	if o.slowStreams > 0 && o.runs(scenarioSlow) {
		slow, err := b.measureSlow(ctx, o, fileLimit)
		if err != nil {
			if ctx.Err() != nil {
				return exitInterrupted
			}
			fmt.Fprintln(os.Stderr, "bench: slow streams:", err)
			env.dumpLogs(os.Stderr)
			return exitSetup
		}
		rep.Slow = slow
		slow.print(os.Stdout)
	}

	// Settlement: the store in this process, 64 goroutines per CPU it
	// has, as the billing package's BenchmarkSettleDurable does.
	if o.runs(scenarioSettle) {
		settle, err := measureSettle(ctx, filepath.Join(env.dir, "settle"), o.duration, 64*runtime.GOMAXPROCS(0))
		if err != nil {
			if ctx.Err() != nil {
				return exitInterrupted
			}
			fmt.Fprintln(os.Stderr, "bench: settlement:", err)
			return exitSetup
		}
		rep.Settle = settle
		settle.print(os.Stdout)
	}
	rep.Elapsed = time.Since(began).Round(time.Millisecond).String()
	rep.Goals = rep.goals()
	printGoals(os.Stdout, rep.Goals)
	fmt.Printf("total time: %s (setup %s)\n", rep.Elapsed, setup.Round(time.Millisecond))

	if o.jsonOut != "" {
		if err := rep.writeJSON(o.jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return exitSetup
		}
		fmt.Printf("raw numbers: %s\n", o.jsonOut)
	}
	if bad := rep.tooManyErrors(); len(bad) > 0 {
		fmt.Fprintln(os.Stderr, "\nbench: error rate above 1%:")
		for _, line := range bad {
			fmt.Fprintln(os.Stderr, "  "+line)
		}
		env.dumpLogs(os.Stderr)
		return exitTooManyErrs
	}
	return exitOK
}
