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

// conns counts a process's TCP connections by side: in are those
// accepted on its clients' port, out those it opened to its upstreams.
type conns struct{ in, out int64 }

func (c conns) plus(d conns) conns { return conns{c.in + d.in, c.out + d.out} }

// tcpConns counts a process's TCP connections from /proc: established
// are those in the established state, open those in any state but
// listening (a connection half closed, its peer gone but its descriptor
// not yet closed, among them). An established connection costs the Go
// server one goroutine (in) or the Go client two (out: its read and write
// loops), which is how the soak tells connection pools from the rest of
// Caddy's goroutines; open is what the soak checks for connections left
// behind.
func tcpConns(pid, inPort int, outPorts []int) (established, open conns, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return established, open, err
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
			return established, open, err
		}
		e, o, err := countConns(data, inodes, inPort, outPorts)
		if err != nil {
			return established, open, fmt.Errorf("%s: %w", table, err)
		}
		established, open = established.plus(e), open.plus(o)
	}
	return established, open, nil
}

// The states of /proc/net/tcp that countConns tells apart.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// countConns counts the connections of a /proc/net/tcp table whose inode
// is in inodes, by their local port (in) or remote port (out): those
// established, and those open in any state but listening.
func countConns(table []byte, inodes map[string]bool, inPort int, outPorts []int) (established, open conns, err error) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return established, open, fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] == tcpListen || !inodes[f[9]] {
			continue
		}
		local, err := hexPort(f[1])
		if err != nil {
			return established, open, err
		}
		remote, err := hexPort(f[2])
		if err != nil {
			return established, open, err
		}
		var c conns
		switch {
		case local == inPort:
			c.in = 1
		case slices.Contains(outPorts, remote):
			c.out = 1
		}
		open = open.plus(c)
		if f[3] == tcpEstablished {
			established = established.plus(c)
		}
	}
	return established, open, sc.Err()
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
