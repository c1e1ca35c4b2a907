package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// tcpConns counts a process's established TCP connections from /proc: in
// are those accepted on inPort (its clients'), out those it opened to one
// of outPorts (its upstreams'). Each costs the Go server one goroutine
// (in) or the Go client two (out: its read and write loops), which is how
// the soak tells connection pools from the rest of Caddy's goroutines.
func tcpConns(pid, inPort int, outPorts []int) (in, out int64, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return 0, 0, err
	}
	inodes := make(map[string]bool, len(fds))
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	for _, table := range []string{"net/tcp", "net/tcp6"} {
		data, err := os.ReadFile(filepath.Join(dir, table))
		if err != nil {
			if table == "net/tcp6" {
				continue // no IPv6
			}
			return 0, 0, err
		}
		i, o, err := countConns(data, inodes, inPort, outPorts)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", table, err)
		}
		in, out = in+i, out+o
	}
	return in, out, nil
}

// tcpEstablished is /proc/net/tcp's state of an established connection.
const tcpEstablished = "01"

// countConns counts the established connections of a /proc/net/tcp table
// whose inode is in inodes, by their local port (in) or remote port (out).
func countConns(table []byte, inodes map[string]bool, inPort int, outPorts []int) (in, out int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return 0, 0, fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] != tcpEstablished || !inodes[f[9]] {
			continue
		}
		local, err := hexPort(f[1])
		if err != nil {
			return 0, 0, err
		}
		remote, err := hexPort(f[2])
		if err != nil {
			return 0, 0, err
		}
		switch {
		case local == inPort:
			in++
		case slices.Contains(outPorts, remote):
			out++
		}
	}
	return in, out, sc.Err()
}

// hexPort is the port of a /proc/net/tcp address ("0100007F:1F90").
func hexPort(addr string) (int, error) {
	_, port, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, fmt.Errorf("address %q", addr)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	return int(p), err
}

// addrPort is the port of host:port, or 0.
func addrPort(hostport string) int {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return p
}
