package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/mock"
)

// mockReady is the line a mock child prints once it listens:
// "mock listening <addr> gomaxprocs <n>".
const mockReady = "mock listening"

// serveMock is the hidden -serve-mock mode: the mock upstream on a real
// listener, until SIGTERM or SIGINT, or until its standard input closes
// (the parent holds the other end, so the mock never outlives it).
func serveMock(addr string, tokens int, tps float64) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mock.NewHandler(mock.Config{ReplyTokens: tokens, TokensPerSecond: tps}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		os.Exit(0)
	}()
	fmt.Printf("%s %s gomaxprocs %d\n", mockReady, ln.Addr(), runtime.GOMAXPROCS(0))
	return srv.Serve(ln)
}
