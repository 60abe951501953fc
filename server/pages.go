package server

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Page tokens make a multi-page scan consistent at one revision: the first
// page pins the view it read, and the token names that view's revision,
// the scan's position and a digest of the scan's parameters. Later pages
// read the pinned view. Pinned views are kept on the node that served the
// first page, for PageTTL after their last use and up to MaxPinnedViews;
// a token whose view is gone fails with PAGE_EXPIRED, and the scan must
// start again. Holding a view costs only the B-tree nodes that writes
// have copied since.
//
// The token also carries the time the first page hid expired rows at:
// every page of one scan hides the same rows, whichever scan pinned the
// view first. Version 2 added it.
const tokenVersion = 2

type pageToken struct {
	rev    uint64
	now    int64 // Unix nanos; see View.At
	digest uint64
	after  []byte
}

func (t pageToken) encode() []byte {
	b := []byte{tokenVersion}
	b = binary.AppendUvarint(b, t.rev)
	b = binary.BigEndian.AppendUint64(b, uint64(t.now))
	b = binary.BigEndian.AppendUint64(b, t.digest)
	return append(b, t.after...)
}

func decodeToken(b []byte) (pageToken, error) {
	var t pageToken
	if len(b) < 1 || b[0] != tokenVersion {
		return t, fmt.Errorf("%w: malformed page_token", errInvalid)
	}
	rev, n := binary.Uvarint(b[1:])
	if n <= 0 || len(b) < 1+n+16 {
		return t, fmt.Errorf("%w: malformed page_token", errInvalid)
	}
	t.rev = rev
	t.now = int64(binary.BigEndian.Uint64(b[1+n:]))
	t.digest = binary.BigEndian.Uint64(b[1+n+8:])
	t.after = b[1+n+16:]
	return t, nil
}

// scanDigest identifies a scan's parameters, so that a token is not reused
// for another scan.
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

type pinned struct {
	view    *store.View
	expires time.Time
}

// pageCache holds the views of scans in progress.
type pageCache struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	views map[uint64]*pinned
}

func newPageCache(ttl time.Duration, max int) *pageCache {
	return &pageCache{ttl: ttl, max: max, views: map[uint64]*pinned{}}
}

// pin keeps v for later pages. When full, expired views go first; if none
// has expired the view is not pinned and its next page will expire.
func (c *pageCache) pin(v *store.View, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.views[v.Revision()]; ok {
		p.expires = now.Add(c.ttl)
		return
	}
	if len(c.views) >= c.max {
		for rev, p := range c.views {
			if now.After(p.expires) {
				delete(c.views, rev)
			}
		}
	}
	if len(c.views) < c.max {
		c.views[v.Revision()] = &pinned{view: v, expires: now.Add(c.ttl)}
	}
}

// get returns the pinned view of revision rev.
func (c *pageCache) get(rev uint64, now time.Time) (*store.View, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.views[rev]
	if !ok || now.After(p.expires) {
		delete(c.views, rev)
		return nil, false
	}
	p.expires = now.Add(c.ttl)
	return p.view, true
}
