package server

import (
	"context"
	"errors"
	"fmt"
	"math"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

var errInvalid = store.ErrInvalidArgument

// Limits are the edge limits: checked before a request enters the log,
// and tighter than the state machine's hard limits (store.DefaultLimits).
// Sizes are in bytes.
type Limits struct {
	// MaxRequestBytes bounds a request message (gRPC refuses larger ones
	// with ResourceExhausted).
	MaxRequestBytes int
	// MaxKeyBytes bounds an encoded primary key.
	MaxKeyBytes int
	// MaxValueBytes bounds one string or bytes value.
	MaxValueBytes int
	// MaxRowBytes bounds an encoded row.
	MaxRowBytes int
	// MaxOps bounds the operations of one transaction branch.
	MaxOps int
	// MaxConditions bounds the conditions of one transaction.
	MaxConditions int
	// MaxBatchGet bounds the keys of one BatchGet.
	MaxBatchGet int
	// DefaultScanLimit is the page size of a scan that sets none.
	DefaultScanLimit int
	// MaxScanLimit bounds the page size of a scan.
	MaxScanLimit int
	// MaxDataBytes is the data quota: once the tables' encoded rows
	// (View.DataBytes) reach it, writes that add data (insert, upsert,
	// update, creating a table or an index) are refused with
	// QUOTA_EXCEEDED; deletes, expiry refreshes and reads still pass, so
	// the way back is to delete. 0: no quota.
	//
	// Why at the edge and not in the state machine: the quota is each
	// member's setting, and a decision that differed between replicas
	// applying the same log would make them diverge. Checked before the
	// proposal, a refusal changes nothing anywhere; the price is that
	// writes already in flight when the quota is reached still land, so
	// the data may end above it by up to the writes pending at that moment.
	MaxDataBytes int64
	// MaxResponseBytes bounds the encoded size of one response message
	// (--max-response-bytes): a BatchGet whose rows would exceed it is
	// refused with RESPONSE_TOO_LARGE, a Scan page ends early with a page
	// token for the rest, a Txn whose Get operations would read more is
	// refused before it is proposed, and a watch splits one transaction's
	// events over several messages. It is at least MaxRowBytes plus
	// responseFraming, so that a response of one row always fits.
	MaxResponseBytes int
	// MaxResponseBytesInFlight bounds the bytes of the large responses
	// (responseReserveMin and over) this member builds at once
	// (--max-response-bytes-in-flight): a Get, BatchGet, Scan or Txn with
	// Get operations whose answer would take more than is left is refused
	// at once with OVERLOADED rather than queued. At least MaxResponseBytes, so that one
	// response of the largest size can always be built on an idle member.
	MaxResponseBytesInFlight int64
}

// responseFraming is the room a response needs beyond the stored size of
// one row. A row's wire form spends more than its stored encoding on each
// field: a map entry's tag and lengths, a value's tag, an int's ten-byte
// varint where the store writes a zigzag varint, a timestamp message
// where the store writes a varint; at most 28 bytes for each of the
// store's 1024 fields (store.Limits.MaxFields), plus the primary key's
// name, the revisions and expiry, the response header and the result's
// own tags: about 30 KiB. 64 KiB leaves room.
const responseFraming = 64 << 10

// DefaultLimits returns the default edge limits.
func DefaultLimits() Limits {
	return Limits{
		MaxRequestBytes:  16 << 20,
		MaxKeyBytes:      1 << 10,
		MaxValueBytes:    4 << 20,
		MaxRowBytes:      8 << 20,
		MaxOps:           128,
		MaxConditions:    128,
		MaxBatchGet:      1000,
		DefaultScanLimit: 1000,
		MaxScanLimit:     10000,
		// 64 MiB holds eight rows of the largest size, and the Go client
		// accepts messages of twice that (client/client.go). A larger
		// answer takes long to send (half a second for 64 MiB at 1 Gbit/s)
		// and holds its memory, twice over while gRPC has a marshaled copy,
		// all that time.
		MaxResponseBytes: 64 << 20,
		// Eight responses of the largest size at once. It bounds what
		// answers pin beyond the data itself, which is what the member's
		// memory has to be sized for; the default leaves most of a small
		// (4 GiB) machine to the data.
		MaxResponseBytesInFlight: 512 << 20,
	}
}

// Validate checks the limits against each other and the state machine's.
func (l Limits) Validate() error {
	hard := store.DefaultLimits()
	switch {
	case l.MaxKeyBytes < 16 || l.MaxKeyBytes > hard.MaxKeyBytes:
		return fmt.Errorf("max key bytes %d must be 16 to %d", l.MaxKeyBytes, hard.MaxKeyBytes)
	case l.MaxRowBytes < l.MaxKeyBytes || l.MaxRowBytes > hard.MaxRowBytes:
		return fmt.Errorf("max row bytes %d must be %d to %d", l.MaxRowBytes, l.MaxKeyBytes, hard.MaxRowBytes)
	case l.MaxValueBytes < 1 || l.MaxValueBytes > l.MaxRowBytes:
		return fmt.Errorf("max value bytes %d must be 1 to the max row bytes %d", l.MaxValueBytes, l.MaxRowBytes)
	case l.MaxRequestBytes < l.MaxRowBytes:
		return fmt.Errorf("max request bytes %d must be at least the max row bytes %d", l.MaxRequestBytes, l.MaxRowBytes)
	case l.MaxOps < 1 || l.MaxOps > hard.MaxOps:
		return fmt.Errorf("max ops %d must be 1 to %d", l.MaxOps, hard.MaxOps)
	case l.MaxConditions < 0 || l.MaxConditions > hard.MaxConditions:
		return fmt.Errorf("max conditions %d must be 0 to %d", l.MaxConditions, hard.MaxConditions)
	case l.MaxBatchGet < 1:
		return errors.New("max batch get must be positive")
	case l.DefaultScanLimit < 1 || l.DefaultScanLimit > l.MaxScanLimit:
		return fmt.Errorf("default scan limit %d must be 1 to the max scan limit %d", l.DefaultScanLimit, l.MaxScanLimit)
	case l.MaxDataBytes < 0:
		return fmt.Errorf("data quota %d must be 0 (none) or positive", l.MaxDataBytes)
	case l.MaxResponseBytes < l.MaxRowBytes+responseFraming || l.MaxResponseBytes > math.MaxInt32:
		return fmt.Errorf("max response bytes %d must be %d (the max row bytes %d and %d for framing, so that one row fits) to %d",
			l.MaxResponseBytes, l.MaxRowBytes+responseFraming, l.MaxRowBytes, responseFraming, math.MaxInt32)
	case l.MaxResponseBytesInFlight < int64(l.MaxResponseBytes):
		return fmt.Errorf("max response bytes in flight %d must be at least the max response bytes %d", l.MaxResponseBytesInFlight, l.MaxResponseBytes)
	}
	return nil
}

// store returns the store limits that enforce these edge limits.
func (l Limits) store() store.Limits {
	s := store.DefaultLimits()
	s.MaxKeyBytes, s.MaxRowBytes, s.MaxOps, s.MaxConditions = l.MaxKeyBytes, l.MaxRowBytes, l.MaxOps, l.MaxConditions
	return s
}

// checkQuota refuses a write that would add data while v's data has
// reached the quota.
func (l Limits) checkQuota(v *store.View) error {
	if l.MaxDataBytes == 0 {
		return nil
	}
	if n := v.DataBytes(); n >= l.MaxDataBytes {
		return fmt.Errorf("%w: the data is %d bytes, at or over the quota of %d (--data-quota-bytes); "+
			"writes that add data are refused until rows are deleted or the quota is raised, deletes still pass", errQuotaExceeded, n, l.MaxDataBytes)
	}
	return nil
}

// addsData reports whether txn may add data: an insert, upsert or update
// in either branch.
func addsData(txn store.Txn) bool {
	for _, br := range [][]store.Op{txn.Then, txn.Else} {
		for _, op := range br {
			switch op.Kind {
			case store.OpInsert, store.OpUpsert, store.OpUpdate:
				return true
			}
		}
	}
	return false
}

// checkValueSizes refuses string and bytes values over MaxValueBytes.
func (l Limits) checkValueSizes(txn store.Txn) error {
	check := func(where string, v store.Value) error {
		if k := v.Kind(); (k == store.KindString || k == store.KindBytes) && len(v.AsString()) > l.MaxValueBytes {
			return fmt.Errorf("%s: value of %d bytes, limit %d: %w", where, len(v.AsString()), l.MaxValueBytes, store.ErrTooLarge)
		}
		return nil
	}
	for _, br := range [][]store.Op{txn.Then, txn.Else} {
		for _, op := range br {
			for _, f := range op.Fields {
				if err := check("table "+op.Table+": field "+f.Name, f.Value); err != nil {
					return err
				}
			}
		}
	}
	for i, c := range txn.Conditions {
		if err := check(fmt.Sprintf("condition %d", i), c.Value); err != nil {
			return err
		}
	}
	return nil
}

// checkSession validates a write session at the edge.
func checkSession(ws *pb.WriteSession) error {
	if ws == nil || (len(ws.ClientId) == 0 && ws.Seq == 0 && ws.FirstIncompleteSeq == 0) {
		return nil
	}
	switch {
	case len(ws.ClientId) == 0 || len(ws.ClientId) > 64:
		return fmt.Errorf("%w: session client_id must be 1 to 64 bytes", errInvalid)
	case ws.Seq == 0:
		return fmt.Errorf("%w: session seq must be at least 1", errInvalid)
	case ws.FirstIncompleteSeq > ws.Seq:
		return fmt.Errorf("%w: session first_incomplete_seq %d is after seq %d", errInvalid, ws.FirstIncompleteSeq, ws.Seq)
	}
	return nil
}

// checkFresh runs a schema-dependent check against this node's view. The
// view may lag the leader (a table created a moment ago through another
// member), so a failure is only trusted after the node has caught up with
// a linearizable read index; then the check runs once more.
func (s *Server) checkFresh(ctx context.Context, check func(*store.View) error) error {
	err := check(s.node.FSM().Store().View())
	if err == nil {
		return nil
	}
	// A node that cannot confirm it is current (no leader, restarting,
	// partitioned) must not refuse on the strength of a view that may be
	// stale: it answers with why it cannot tell, which clients retry.
	idx, ierr := s.readIndex(ctx)
	if ierr != nil {
		return ierr
	}
	if werr := s.node.WaitApplied(ctx, idx); werr != nil {
		return werr
	}
	return check(s.node.FSM().Store().View())
}
