package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// The Raft port hands connections that open with the HTTP/2 preface to
// the peer listener with their first byte intact, everything else to
// Raft, and closes connections that send nothing in time.
func TestPeerMuxRoutesAndTimesOut(t *testing.T) {
	sl, err := newStreamLayer("127.0.0.1:0", nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newPeerMux(sl, slog.New(slog.DiscardHandler), 200*time.Millisecond)
	defer m.Close()
	addr := sl.Addr().String()

	send := func(b string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	expect := func(accept func() (net.Conn, error), want string) {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			c, err := accept()
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			b := make([]byte, len(want))
			_, err = io.ReadFull(c, b)
			if err != nil {
				got <- "read error: " + err.Error()
				return
			}
			got <- string(b)
		}()
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("got %q, want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no connection for %q", want)
		}
	}
	c1 := send("\x00raft")
	defer c1.Close()
	expect(m.Accept, "\x00raft")
	c2 := send("PRI * HTTP/2.0")
	defer c2.Close()
	expect(m.peer.Accept, "PRI * HTTP/2.0")

	// A silent connection is closed by the port after the first-byte
	// timeout.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = silent.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("silent connection: read %v, want EOF (closed by the server)", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent connection closed after %v", d)
	}
}
