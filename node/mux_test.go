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

// A flood of silent connections pushes out only its own: a Raft
// connection that arrives behind more than maxUnidentified of them is
// still served, and so after the peer listener closed.
func TestPeerMuxSurvivesSilentFlood(t *testing.T) {
	sl, err := newStreamLayer("127.0.0.1:0", nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newPeerMux(sl, slog.New(slog.DiscardHandler), 10*time.Second)
	defer m.Close()
	addr := sl.Addr().String()
	for range maxUnidentified + 44 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	_ = m.peer.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("\x01vote")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		rc, err := m.Accept()
		if err == nil {
			b := make([]byte, 5)
			_, err = io.ReadFull(rc, b)
			if err == nil && string(b) != "\x01vote" {
				err = errors.New("read " + string(b))
			}
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Raft connection behind a flood of silent ones was not served")
	}
	m.pendMu.Lock()
	n := len(m.pending)
	m.pendMu.Unlock()
	if n > maxUnidentified {
		t.Fatalf("%d connections waiting, limit %d", n, maxUnidentified)
	}
}
