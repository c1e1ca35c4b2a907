package main

import (
	"net"
	"os"
	"testing"
)

func TestCountConns(t *testing.T) {
	// Three connections of the process (inodes 11, 12, 13) and one of
	// another (99): 11 accepted on port 8080 (0x1F90), 12 to port 9000
	// (0x2328), 13 listening, 14 the process's but closing.
	table := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 11 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 12 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C353 0100007F:2328 06 00000000:00000000 00:00000000 00000000     0        0 14 1 0000000000000000 20 4 30 10 -1
`)
	inodes := map[string]bool{"11": true, "12": true, "13": true, "14": true}
	in, out, err := countConns(table, inodes, 8080, []int{9000, 9001})
	if err != nil || in != 1 || out != 1 {
		t.Fatalf("in %d out %d err %v: want 1 and 1", in, out, err)
	}
	if _, _, err := countConns([]byte("header\n   0: 0100007F 01\n"), inodes, 8080, nil); err == nil {
		t.Fatal("a short line: want an error")
	}
}

// TestTCPConns counts this process's own connections: three clients of a
// listener it serves, and two connections it opened to another.
func TestTCPConns(t *testing.T) {
	listen := func() (net.Listener, <-chan struct{}) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		accepted := make(chan struct{}, 8)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() })
				accepted <- struct{}{}
			}
		}()
		return ln, accepted
	}
	dial := func(ln net.Listener, accepted <-chan struct{}, n int) {
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			<-accepted
		}
	}
	site, siteAccepted := listen()
	up, upAccepted := listen()
	dial(site, siteAccepted, 3)
	dial(up, upAccepted, 2)
	// Both ends of each connection are this process's. in counts the 3
	// accepted ends on the site's port (a dialled end's local port is
	// ephemeral); out counts the 2 dialled ends to up (the accepted ends
	// have up's port as their local port, not remote).
	in, out, err := tcpConns(os.Getpid(), addrPort(site.Addr().String()), []int{addrPort(up.Addr().String())})
	if err != nil {
		t.Fatal(err)
	}
	if in != 3 || out != 2 {
		t.Fatalf("in %d out %d: want 3 and 2", in, out)
	}
}
