package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// pinning is how the processes share the CPUs.
type pinning struct {
	on bool
	// cpus is how many CPUs this program could use before it pinned itself.
	cpus int
	// load and server are the CPU ids of the load generator and of the
	// servers (Caddy and the mocks), when on.
	load, server int
	taskset      string
	note         string
	// selfAllowed is this process's Cpus_allowed_list as the kernel says.
	selfAllowed string
}

// envPinned marks the re-executed, pinned process: "<cpus>,<load>,<server>".
const envPinned = "ARCANE_BENCH_PINNED"

// pinSelf puts this process on the first allowed CPU by re-executing it
// under taskset (so the Go runtime sizes GOMAXPROCS for the one CPU it
// has), or says why it did not. It does not return when the exec succeeds.
func pinSelf(disabled bool) pinning {
	if v := os.Getenv(envPinned); v != "" {
		var p pinning
		if _, err := fmt.Sscanf(v, "%d,%d,%d", &p.cpus, &p.load, &p.server); err == nil {
			p.on = true
			p.taskset, _ = exec.LookPath("taskset")
			p.selfAllowed = allowedCPUs("self")
			p.note = fmt.Sprintf("on: load generator on CPU %d, caddy and mocks on CPU %d", p.load, p.server)
			return p
		}
	}
	p := pinning{cpus: runtime.NumCPU(), selfAllowed: allowedCPUs("self")}
	ids, err := parseCPUList(p.selfAllowed)
	if err == nil && len(ids) > 0 {
		p.cpus = len(ids)
	}
	switch {
	case disabled:
		p.note = "off (-no-pin)"
		return p
	case err != nil || len(ids) < 2:
		p.note = fmt.Sprintf("off (%d CPU allowed)", p.cpus)
		return p
	}
	taskset, lerr := exec.LookPath("taskset")
	if lerr != nil {
		p.note = "off (no taskset)"
		return p
	}
	self, eerr := os.Executable()
	if eerr != nil {
		p.note = "off (" + eerr.Error() + ")"
		return p
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d", envPinned, p.cpus, ids[0], ids[1]))
	argv := append([]string{"taskset", "-c", strconv.Itoa(ids[0]), self}, os.Args[1:]...)
	err = syscall.Exec(taskset, argv, env)
	p.note = "off (exec taskset: " + err.Error() + ")"
	return p
}

// command returns the argv that runs name with args on the servers' CPU.
func (p pinning) command(name string, args ...string) []string {
	if !p.on || p.taskset == "" {
		return append([]string{name}, args...)
	}
	return append([]string{p.taskset, "-c", strconv.Itoa(p.server), name}, args...)
}

// allowedCPUs returns the Cpus_allowed_list of /proc/<pid>/status, or "?"
// when it cannot be read.
func allowedCPUs(pid string) string {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// parseCPUList reads the kernel's CPU list format: "0-3,5,7-8".
func parseCPUList(s string) ([]int, error) {
	var ids []int
	for part := range strings.SplitSeq(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q", s)
			}
		}
		for i := a; i <= b; i++ {
			ids = append(ids, i)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("empty CPU list %q", s)
	}
	return ids, nil
}
