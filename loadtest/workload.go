package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// OpKind is what an operation does.
type OpKind uint8

// Operation kinds.
const (
	OpWrite     OpKind = iota // overwrite a key (upsert / put)
	OpInsert                  // create a new, unique key
	OpRead                    // linearizable point read
	OpStaleRead               // stale (serializable) point read from any member
	OpScan                    // secondary-index range scan
	OpTxn                     // conditional transaction
	numOpKinds
)

var opNames = [...]string{"write", "insert", "read", "stale-read", "scan", "txn"}

func (k OpKind) String() string { return opNames[k] }

// IsWrite reports whether the operation changes data.
func (k OpKind) IsWrite() bool { return k == OpWrite || k == OpInsert || k == OpTxn }

// Op is one operation to perform.
type Op struct {
	Kind OpKind
	Key  string
	// Num is a numeric attribute (the indexed field; the scan start).
	Num int64
}

// Target is a system under load. Do must be safe for concurrent use.
type Target interface {
	Name() string
	// Setup prepares the data the workload needs (tables, a preloaded key
	// space).
	Setup(ctx context.Context, keys int, value []byte) error
	// Do performs one operation.
	Do(ctx context.Context, conn int, op Op, value []byte) error
	// Conns is the number of independent connections (clients) Do may be
	// asked to use.
	Conns() int
	Close() error
}

// Workload picks operations.
type Workload interface {
	Name() string
	Next(rng *rand.Rand) Op
	// Kinds lists the operation kinds it issues, for setup.
	Kinds() []OpKind
}

// keyChooser draws keys uniformly or zipfian over [0, n). It is used by
// the single producer goroutine only.
type keyChooser struct {
	n    int
	zipf bool
	s    float64
	z    *rand.Zipf
}

func (k *keyChooser) next(rng *rand.Rand) int {
	if !k.zipf || k.n < 2 {
		return rng.IntN(k.n)
	}
	if k.z == nil {
		k.z = rand.NewZipf(rng, k.s, 1, uint64(k.n-1))
	}
	return int(k.z.Uint64())
}

// KeyName formats key i as a fixed 8-byte key.
func KeyName(i int) string { return fmt.Sprintf("%08d", i) }

// mix issues operation kinds in fixed proportions.
type mix struct {
	name    string
	keys    *keyChooser
	weights []struct {
		kind OpKind
		w    float64
	}
	inserts *atomic.Int64
}

func (m *mix) Name() string { return m.name }

func (m *mix) Kinds() []OpKind {
	var out []OpKind
	for _, w := range m.weights {
		out = append(out, w.kind)
	}
	return out
}

func (m *mix) Next(rng *rand.Rand) Op {
	r := rng.Float64()
	kind := m.weights[len(m.weights)-1].kind
	for _, w := range m.weights {
		if r < w.w {
			kind = w.kind
			break
		}
		r -= w.w
	}
	op := Op{Kind: kind}
	switch kind {
	case OpInsert:
		op.Key = "i" + KeyName(int(m.inserts.Add(1)))
	default:
		k := m.keys.next(rng)
		op.Key, op.Num = KeyName(k), int64(k)
	}
	return op
}

// NewWorkload builds a named workload: write, insert, read, stale-read,
// mixed (readRatio reads, the rest writes), scan, txn.
func NewWorkload(name string, keys int, zipf bool, readRatio float64) (Workload, error) {
	kc := keyChooser{n: keys, zipf: zipf, s: 1.1}
	m := &mix{name: name, keys: &kc, inserts: &atomic.Int64{}}
	add := func(k OpKind, w float64) {
		m.weights = append(m.weights, struct {
			kind OpKind
			w    float64
		}{k, w})
	}
	switch name {
	case "write":
		add(OpWrite, 1)
	case "insert":
		add(OpInsert, 1)
	case "read":
		add(OpRead, 1)
	case "stale-read":
		add(OpStaleRead, 1)
	case "mixed":
		if readRatio < 0 || readRatio > 1 {
			return nil, fmt.Errorf("read ratio %v must be between 0 and 1", readRatio)
		}
		add(OpRead, readRatio)
		add(OpWrite, 1-readRatio)
	case "scan":
		add(OpScan, 1)
	case "txn":
		add(OpTxn, 1)
	default:
		return nil, fmt.Errorf("unknown workload %q (write, insert, read, stale-read, mixed, scan, txn)", name)
	}
	if keys < 1 {
		return nil, fmt.Errorf("key space must have at least one key")
	}
	return m, nil
}
