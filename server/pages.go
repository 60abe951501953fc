package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Page tokens make a multi-page scan consistent at one revision: the first
// page pins the view it read, and the token names that view's revision,
// the scan's position and a digest of the scan's parameters. Later pages
// read the pinned view. Pinned views are kept on the node that served the
// first page, for PageTTL after their last use and up to MaxPinnedViews
// (MaxPinnedViews per connection, ConnLimits); a token whose view is gone
// fails with PAGE_EXPIRED, and the scan must start again. Holding a view
// costs only the B-tree nodes that writes have copied since.
//
// The token also carries the time the first page hid expired rows at:
// every page of one scan hides the same rows, whichever scan pinned the
// view first. Version 2 added it.
//
// Version 3 authenticates the token: a client could otherwise forge the
// position (reading outside the range its scan's digest names), the time
// (seeing rows hidden as expired) or the revision (reaching a view
// another caller pinned). The token ends with an HMAC-SHA256 of the rest,
// truncated to tokenMACSize bytes, under a key made at random when the
// process starts. Why a random key is enough: a token is only good where
// its view is pinned, on the member (the process) that served the first
// page, and pins do not survive a restart; so no other process ever needs
// to verify it, and there is no key to configure, share or rotate. The
// token also names that process (tokenIssuer, random too, not secret), so
// that a token of another member or of this member before a restart is
// told apart from a forged one: the first is PAGE_EXPIRED as before
// (restart the scan), the second INVALID_ARGUMENT.
const (
	tokenVersion = 3
	// tokenVersionUnsigned is the version before tokens were signed: such
	// a token was issued by a process that has since been replaced.
	tokenVersionUnsigned = 2
	tokenMACSize         = 16
	tokenIssuerSize      = 8
)

var tokenKey, tokenIssuer = func() ([]byte, []byte) {
	b := make([]byte, 32+tokenIssuerSize)
	// crypto/rand.Read does not fail on supported platforms (it panics
	// instead, Go 1.24 and later).
	_, _ = rand.Read(b)
	return b[:32], b[32:]
}()

type pageToken struct {
	rev    uint64
	now    int64 // Unix nanos; see View.At
	digest uint64
	after  []byte
}

// errBadToken is the refusal of a token whose MAC does not verify.
var errBadToken = fmt.Errorf("%w: page_token was not issued by this member or was altered; start the scan again without it", errInvalid)

func tokenMAC(b []byte) []byte {
	m := hmac.New(sha256.New, tokenKey)
	_, _ = m.Write(b)
	return m.Sum(nil)[:tokenMACSize]
}

func (t pageToken) encode() []byte {
	b := make([]byte, 0, 1+tokenIssuerSize+binary.MaxVarintLen64+16+len(t.after)+tokenMACSize)
	b = append(b, tokenVersion)
	b = append(b, tokenIssuer...)
	b = binary.AppendUvarint(b, t.rev)
	b = binary.BigEndian.AppendUint64(b, uint64(t.now))
	b = binary.BigEndian.AppendUint64(b, t.digest)
	b = append(b, t.after...)
	return append(b, tokenMAC(b)...)
}

func decodeToken(b []byte) (pageToken, error) {
	var t pageToken
	if len(b) >= 1 && b[0] == tokenVersionUnsigned {
		return t, fmt.Errorf("%w: page_token was issued before this member restarted, and the view it names is gone; start the scan again", errPageExpired)
	}
	if len(b) < 1+tokenIssuerSize+tokenMACSize || b[0] != tokenVersion {
		return t, fmt.Errorf("%w: malformed page_token", errInvalid)
	}
	body, mac := b[:len(b)-tokenMACSize], b[len(b)-tokenMACSize:]
	if !bytes.Equal(body[1:1+tokenIssuerSize], tokenIssuer) {
		// Another process's token, or a forged issuer: this process cannot
		// verify either, and neither reaches a view held here.
		return t, fmt.Errorf("%w: page_token was issued by another member, or by this one before it restarted, and the view it names is not held here; start the scan again", errPageExpired)
	}
	if !hmac.Equal(mac, tokenMAC(body)) {
		return t, errBadToken
	}
	rest := body[1+tokenIssuerSize:]
	rev, n := binary.Uvarint(rest)
	if n <= 0 || len(rest) < n+16 {
		return t, fmt.Errorf("%w: malformed page_token", errInvalid)
	}
	t.rev = rev
	t.now = int64(binary.BigEndian.Uint64(rest[n:]))
	t.digest = binary.BigEndian.Uint64(rest[n+8:])
	t.after = rest[n+16:]
	return t, nil
}

// scanDigest identifies a scan's parameters, so that a token is not reused
// for another scan. It needs no key: the token's MAC covers it.
func scanDigest(table, index string, r *pb.KeyRange, reverse, keysOnly bool) uint64 {
	h := xxhash.New()
	_, _ = h.WriteString(table)
	_, _ = h.WriteString("\x00" + index + "\x00")
	if r != nil {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		_, _ = h.Write(b)
	}
	_, _ = h.Write([]byte{boolByte(reverse), boolByte(keysOnly)})
	return h.Sum64()
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// pinOwner identifies the caller a pin is charged to: its connection
// (conn.go), or, for a request that did not come through the server's
// connection tagging, its remote address; "" for in-process calls.
func pinOwner(ctx context.Context) any {
	if c := connOf(ctx); c != nil {
		return c
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// pinned is one caller's pin of the view of one revision.
type pinned struct {
	owner any
	view  *store.View
	used  time.Time // last pin or page; it expires ttl later
}

// pageCache holds the views of scans in progress.
//
// Pins are charged to the caller that made them (pinOwner): one caller
// holds at most perOwner (0: no share), and beyond that its least
// recently used pin makes room for its new one. When the member-wide
// table (max) is full, the least recently used pin of the caller holding
// the most pins goes, whoever asks: a caller that opens scans it never
// finishes ages out its own pins, not other callers' scans. Both choices
// scan the table, which only happens when a bound is reached and costs
// O(max) under the lock.
type pageCache struct {
	ttl      time.Duration
	max      int
	perOwner int

	mu    sync.Mutex
	byRev map[uint64]map[any]*pinned // revision -> owner -> pin
	owned map[any]int                // pins per owner
	n     int                        // pins in all
}

func newPageCache(ttl time.Duration, max, perOwner int) *pageCache {
	return &pageCache{ttl: ttl, max: max, perOwner: perOwner, byRev: map[uint64]map[any]*pinned{}, owned: map[any]int{}}
}

func (c *pageCache) expired(p *pinned, now time.Time) bool { return now.Sub(p.used) > c.ttl }

// pin keeps v for the later pages of the caller of ctx.
func (c *pageCache) pin(ctx context.Context, v *store.View, now time.Time) {
	owner, rev := pinOwner(ctx), v.Revision()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.byRev[rev][owner]; p != nil {
		p.used = now
		return
	}
	if c.perOwner > 0 && c.owned[owner] >= c.perOwner {
		c.sweep(now)
		if c.owned[owner] >= c.perOwner {
			c.evictLRU(func(p *pinned) bool { return p.owner == owner })
		}
	}
	if c.n >= c.max {
		c.sweep(now)
		if c.n >= c.max {
			c.evictLRU(nil)
		}
	}
	m := c.byRev[rev]
	if m == nil {
		m = map[any]*pinned{}
		c.byRev[rev] = m
	}
	m[owner] = &pinned{owner: owner, view: v, used: now}
	c.owned[owner]++
	c.n++
}

// get returns the view of revision rev pinned for the caller of ctx. A
// pin of the same revision by another caller serves too (a client that
// reconnected between pages is another connection; the token's MAC shows
// the revision came from this member, and one revision has one state).
func (c *pageCache) get(ctx context.Context, rev uint64, now time.Time) (*store.View, bool) {
	owner := pinOwner(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.byRev[rev]
	p := m[owner]
	if p != nil && c.expired(p, now) {
		c.remove(rev, p)
		p = nil
	}
	if p == nil {
		for _, q := range m {
			if !c.expired(q, now) {
				p = q
				break
			}
		}
	}
	if p == nil {
		return nil, false
	}
	p.used = now
	return p.view, true
}

func (c *pageCache) remove(rev uint64, p *pinned) {
	m := c.byRev[rev]
	delete(m, p.owner)
	if len(m) == 0 {
		delete(c.byRev, rev)
	}
	if c.owned[p.owner]--; c.owned[p.owner] <= 0 {
		delete(c.owned, p.owner)
	}
	c.n--
}

// sweep drops expired pins.
func (c *pageCache) sweep(now time.Time) {
	for rev, m := range c.byRev {
		for _, p := range m {
			if c.expired(p, now) {
				c.remove(rev, p)
			}
		}
	}
}

// evictLRU drops one pin: among those of, when set, the least recently
// used; otherwise the least recently used of the owner holding the most.
func (c *pageCache) evictLRU(of func(*pinned) bool) {
	var (
		victim    *pinned
		victimRev uint64
		most      int
	)
	for rev, m := range c.byRev {
		for _, p := range m {
			if of != nil && !of(p) {
				continue
			}
			n := 0
			if of == nil {
				n = c.owned[p.owner]
			}
			if victim == nil || n > most || (n == most && p.used.Before(victim.used)) {
				victim, victimRev, most = p, rev, n
			}
		}
	}
	if victim != nil {
		c.remove(victimRev, victim)
	}
}
