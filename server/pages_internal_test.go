package server

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/memdbd/memdbd/store"
)

// A token this member issued decodes to what was encoded; any change to
// it (revision, time, digest, position, issuer, MAC, length) is refused,
// and a token whose MAC does not verify says so.
func TestPageTokenMAC(t *testing.T) {
	tok := pageToken{rev: 300, now: 1234567, digest: 0xfeedface, after: []byte("\x06row-17\x00")}
	b := tok.encode()
	got, err := decodeToken(b)
	if err != nil || got.rev != tok.rev || got.now != tok.now || got.digest != tok.digest || string(got.after) != string(tok.after) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// Every single-bit change is refused.
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			f := append([]byte(nil), b...)
			f[i] ^= 1 << bit
			if _, err := decodeToken(f); err == nil {
				t.Fatalf("token with bit %d of byte %d flipped accepted", bit, i)
			}
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := decodeToken(b[:n]); err == nil {
			t.Fatalf("token cut to %d of %d bytes accepted", n, len(b))
		}
	}
	// Forgeries a client would try: another revision, another position,
	// another time, re-encoded in the token's layout without the key.
	forge := func(t pageToken) []byte {
		good := t.encode()
		bad := append([]byte(nil), good...)
		copy(bad[len(bad)-tokenMACSize:], make([]byte, tokenMACSize))
		return bad
	}
	for name, f := range map[string]pageToken{
		"revision": {rev: 299, now: tok.now, digest: tok.digest, after: tok.after},
		"position": {rev: tok.rev, now: tok.now, digest: tok.digest, after: []byte("\x06row-00\x00")},
		"time":     {rev: tok.rev, now: 0, digest: tok.digest, after: tok.after},
	} {
		_, err := decodeToken(forge(f))
		if !errors.Is(err, errBadToken) || !errors.Is(err, errInvalid) {
			t.Errorf("forged %s: %v", name, err)
		}
	}
	// The MAC of one token on the body of another.
	other := pageToken{rev: 299, now: tok.now, digest: tok.digest, after: tok.after}.encode()
	spliced := append(append([]byte(nil), other[:len(other)-tokenMACSize]...), b[len(b)-tokenMACSize:]...)
	if _, err := decodeToken(spliced); !errors.Is(err, errBadToken) {
		t.Errorf("spliced MAC: %v", err)
	}
	// Another process's token (or one from before a restart) is an expired
	// view, as it was before tokens were signed: the SDK restarts the scan.
	foreign := append([]byte(nil), b...)
	foreign[1] ^= 0xFF
	if _, err := decodeToken(foreign); !errors.Is(err, errPageExpired) {
		t.Errorf("token of another member: %v", err)
	}
	if _, err := decodeToken([]byte{tokenVersionUnsigned, 1, 2, 3}); !errors.Is(err, errPageExpired) {
		t.Errorf("unsigned token of an earlier process: %v", err)
	}
}

// views returns n views of a store, at revisions 1..n.
func views(t *testing.T, n int) []*store.View {
	t.Helper()
	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.View
	for rev := uint64(1); rev <= uint64(n); rev++ {
		b := st.Begin()
		if err := b.Advance(rev); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Commit())
	}
	return out
}

func connCtx() context.Context {
	addr := &connAddr{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, state: &connState{}}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: addr})
}

// One caller keeps at most its share of pins, losing its own least
// recently used; when the table is full the caller holding the most pins
// loses its least recently used, not the caller that holds few.
func TestPinsPerCaller(t *testing.T) {
	vs := views(t, 40)
	now := time.Unix(1000, 0)
	t.Run("share", func(t *testing.T) {
		c := newPageCache(time.Minute, 100, 4)
		a, b := connCtx(), connCtx()
		c.pin(b, vs[0], now)
		for i := 1; i <= 10; i++ {
			c.pin(a, vs[i], now.Add(time.Duration(i)*time.Millisecond))
		}
		if c.owned[pinOwner(a)] != 4 || c.n != 5 {
			t.Fatalf("a holds %d pins, %d in all", c.owned[pinOwner(a)], c.n)
		}
		for i := 1; i <= 6; i++ {
			if _, ok := c.get(a, vs[i].Revision(), now); ok {
				t.Errorf("a's pin %d of 10 kept beyond its share of 4", i)
			}
		}
		for i := 7; i <= 10; i++ {
			if _, ok := c.get(a, vs[i].Revision(), now); !ok {
				t.Errorf("a's pin %d, among its newest 4, lost", i)
			}
		}
		if _, ok := c.get(b, vs[0].Revision(), now); !ok {
			t.Error("b's pin lost to a's")
		}
	})
	t.Run("full", func(t *testing.T) {
		c := newPageCache(time.Minute, 8, 0)
		a, b, d := connCtx(), connCtx(), connCtx()
		for i := 0; i < 6; i++ {
			c.pin(a, vs[i], now.Add(time.Duration(i)*time.Millisecond))
		}
		c.pin(d, vs[6], now)
		c.pin(d, vs[7], now)
		// Full: b's first pin takes a's oldest.
		c.pin(b, vs[8], now.Add(time.Second))
		if _, ok := c.get(a, vs[0].Revision(), now.Add(time.Second)); ok {
			t.Error("a's oldest pin kept when the table was full")
		}
		// a goes on: its own pins make room, not b's or d's.
		for i := 9; i < 40; i++ {
			c.pin(a, vs[i], now.Add(time.Second+time.Duration(i)*time.Millisecond))
		}
		for _, p := range []struct {
			ctx context.Context
			v   *store.View
		}{{b, vs[8]}, {d, vs[6]}, {d, vs[7]}} {
			if _, ok := c.get(p.ctx, p.v.Revision(), now.Add(2*time.Second)); !ok {
				t.Errorf("pin of revision %d lost to the caller holding the most", p.v.Revision())
			}
		}
		if c.n != 8 {
			t.Fatalf("%d pins, limit 8", c.n)
		}
	})
	t.Run("expiry and reconnect", func(t *testing.T) {
		c := newPageCache(time.Second, 8, 4)
		a, a2 := connCtx(), connCtx()
		c.pin(a, vs[0], now)
		// A client that reconnected between pages finds the view its
		// first connection pinned.
		if _, ok := c.get(a2, vs[0].Revision(), now.Add(500*time.Millisecond)); !ok {
			t.Error("view pinned by an earlier connection not found")
		}
		if _, ok := c.get(a, vs[0].Revision(), now.Add(2*time.Second)); ok {
			t.Error("expired pin served")
		}
		if c.n != 0 || len(c.owned) != 0 || len(c.byRev) != 0 {
			t.Errorf("expired pin left behind: %d %v %v", c.n, c.owned, c.byRev)
		}
	})
}
