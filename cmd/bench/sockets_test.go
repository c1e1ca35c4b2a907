package main

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestCountConns(t *testing.T) {
	// The process's sockets are inodes 11 to 16, 99 another's: 13
	// listens on port 8080 (0x1F90); 11 was accepted on it and 15 too,
	// half closed (its client gone, CLOSE_WAIT); 12 goes to port 9000
	// (0x2328) and 14 too, closing (FIN_WAIT1); 16 goes to port 9002,
	// not an upstream's.
	table := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 11 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 12 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C353 0100007F:2328 04 00000000:00000000 00:00000000 00000000     0        0 14 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:1F90 0100007F:C354 08 00000000:00000000 00:00000000 00000000     0        0 15 1 0000000000000000 20 4 30 10 -1
   6: 0100007F:C355 0100007F:232A 01 00000000:00000000 00:00000000 00000000     0        0 16 1 0000000000000000 20 4 30 10 -1
`)
	inodes := map[string]bool{"11": true, "12": true, "13": true, "14": true, "15": true, "16": true}
	est, open, err := countConns(table, inodes, 8080, []int{9000, 9001})
	if err != nil || est != (conns{1, 1}) || open != (conns{2, 2}) {
		t.Fatalf("established %+v, open %+v, err %v: want {1 1} and {2 2}", est, open, err)
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
	est, open, err := tcpConns(os.Getpid(), addrPort(site.Addr().String()), []int{addrPort(up.Addr().String())})
	if err != nil {
		t.Fatal(err)
	}
	if est != (conns{3, 2}) || open != est {
		t.Fatalf("established %+v, open %+v: want {3 2} both", est, open)
	}

	// A client that leaves a connection this process does not close
	// leaves it half closed: open, no longer established.
	c, err := net.Dial("tcp", site.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	<-siteAccepted
	c.Close()
	for range 1000 { // the peer's FIN is a loopback hop away
		if est, open, err = tcpConns(os.Getpid(), addrPort(site.Addr().String()), nil); err != nil || est.in == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil || est.in != 3 || open.in != 4 {
		t.Fatalf("after a client left: established %+v, open %+v, err %v: want 3 and 4 in", est, open, err)
	}
}
