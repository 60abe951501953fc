package store

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// A randomized model test: random commands go to the Store and to a
// simple reference model (a map and sorting), and after every batch every
// read of the Store must agree with the model.

var (
	modelSeed  = flag.Uint64("model.seed", 0, "run the model test with this seed only")
	modelSteps = flag.Int("model.steps", 3000, "steps per seed of the model test")
)

const modelTable = "m"

func modelSchema() TableSchema {
	return TableSchema{
		Name:       modelTable,
		PrimaryKey: "id",
		Fields: []FieldSchema{
			{Name: "id", Type: TypeInt},
			{Name: "s", Type: TypeString},
			{Name: "n", Type: TypeInt},
			{Name: "g", Type: TypeString, Required: true},
			{Name: "d", Type: TypeDouble},
		},
		Indexes: []IndexSchema{
			{Name: "by_s", Fields: []string{"s"}, Unique: true},
			{Name: "by_n", Fields: []string{"n"}},
			{Name: "by_g_n", Fields: []string{"g", "n"}},
		},
	}
}

// Indexes that steps create and drop, beside those of the schema.
var modelOptionalIndexes = []IndexSchema{
	{Name: "opt_d", Fields: []string{"d"}},
	{Name: "opt_n_s", Fields: []string{"n", "s"}, Unique: true},
	{Name: "opt_n", Fields: []string{"n"}, Unique: true},
	{Name: "opt_g_id", Fields: []string{"g", "id"}},
	{Name: "opt_bad", Fields: []string{"nope"}},
}

var modelKinds = map[string]Kind{"id": KindInt, "s": KindString, "n": KindInt, "g": KindString, "d": KindDouble}

func modelLimits() Limits {
	l := DefaultLimits()
	l.MaxOps = 5
	l.MaxConditions = 3
	l.MaxFields = 8
	l.MaxIndexes = 6
	return l
}

var (
	sPool = []string{"", "a", "a\x00", "a\x00b", "a\x01", "ab", "b", "é", "zz"}
	gPool = []string{"", "g", "g\x00", "h"}
	nPool = []int64{-3, -2, -1, 0, 1, 2, 3, math.MinInt64, math.MaxInt64}
)

type mRow struct {
	fields map[string]Value // without the primary key
	meta   Meta
}

type model struct {
	rows    map[int64]mRow
	indexes []IndexSchema // in schema order
	limits  Limits
}

func (m *model) clone() *model {
	c := &model{rows: maps.Clone(m.rows), indexes: slices.Clone(m.indexes), limits: m.limits}
	return c
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

func mValidValue(v Value) bool {
	switch v.kind {
	case KindNull, KindBool, KindInt, KindBytes, KindTimestamp:
		return true
	case KindDouble:
		return !math.IsNaN(v.AsDouble())
	case KindString:
		return utf8.ValidString(v.s)
	}
	return false
}

// checkRow is the model of row validation.
func (m *model) checkRow(in []Field) (int64, map[string]Value, error) {
	if len(in) > m.limits.MaxFields {
		return 0, nil, ErrTooLarge
	}
	var pk Value
	havePK := false
	out := map[string]Value{}
	dup := false
	for _, f := range in {
		if !nameRE.MatchString(f.Name) || !mValidValue(f.Value) {
			return 0, nil, ErrInvalidArgument
		}
		if k, ok := modelKinds[f.Name]; ok && f.Value.kind != KindNull && f.Value.kind != k {
			return 0, nil, ErrTypeMismatch
		}
		if f.Name == "id" {
			if havePK {
				return 0, nil, ErrInvalidArgument
			}
			pk, havePK = f.Value, true
			continue
		}
		if _, ok := out[f.Name]; ok {
			dup = true
		}
		out[f.Name] = f.Value
	}
	if !havePK || pk.kind == KindNull || dup {
		return 0, nil, ErrInvalidArgument
	}
	if g, ok := out["g"]; !ok || g.kind == KindNull {
		return 0, nil, ErrInvalidArgument
	}
	return pk.AsInt(), out, nil
}

// entry returns a row's values in an index, or false when it has none.
func entryOf(ix IndexSchema, id int64, fields map[string]Value) ([]Value, bool) {
	var vals []Value
	for _, f := range ix.Fields {
		v := Int(id)
		if f != "id" {
			var ok bool
			if v, ok = fields[f]; !ok {
				return nil, false
			}
		}
		if v.kind == KindNull {
			return nil, false
		}
		vals = append(vals, v)
	}
	return vals, true
}

// write is the model of storing a row: unique indexes, then the new meta.
func (m *model) write(rows map[int64]mRow, rev uint64, id int64, fields map[string]Value) (Meta, error) {
	for _, ix := range m.indexes {
		if !ix.Unique {
			continue
		}
		e, ok := entryOf(ix, id, fields)
		if !ok {
			continue
		}
		for oid, o := range rows {
			if oe, ok := entryOf(ix, oid, o.fields); ok && oid != id && compareTuples(e, oe) == 0 {
				return Meta{}, ErrUniqueViolation
			}
		}
	}
	old, found := rows[id]
	meta := Meta{CreateRevision: rev}
	if found {
		meta = old.meta
	}
	meta.ModRevision = rev
	meta.Version++
	rows[id] = mRow{fields: fields, meta: meta}
	return meta, nil
}

func (m *model) row(id int64, r mRow) Row {
	out := Row{Meta: r.meta, Fields: []Field{{Name: "id", Value: Int(id)}}}
	for n, v := range r.fields {
		out.Fields = append(out.Fields, Field{Name: n, Value: v})
	}
	slices.SortFunc(out.Fields, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *model) evalCondition(c Condition) (bool, error) {
	if c.Table != modelTable {
		return false, ErrTableNotFound
	}
	if c.Key.kind != KindInt {
		return false, ErrTypeMismatch
	}
	r, found := m.rows[c.Key.AsInt()]
	switch c.Test {
	case CondExists:
		return found, nil
	case CondNotExists:
		return !found, nil
	case CondVersion, CondModRevision, CondCreateRevision:
		if c.Op > CmpGreaterEqual {
			return false, ErrInvalidArgument
		}
		n := map[CondTest]uint64{CondVersion: r.meta.Version, CondModRevision: r.meta.ModRevision, CondCreateRevision: r.meta.CreateRevision}[c.Test]
		return holdsOp(c.Op, cmp.Compare(n, c.Number)), nil
	case CondField:
		if !nameRE.MatchString(c.Field) || !mValidValue(c.Value) || c.Op > CmpGreaterEqual {
			return false, ErrInvalidArgument
		}
		var v Value
		if c.Field == "id" {
			if found {
				v = c.Key
			}
		} else if found {
			v = r.fields[c.Field]
		}
		return holdsOp(c.Op, v.Compare(c.Value)), nil
	}
	return false, ErrInvalidArgument
}

func holdsOp(op CompareOp, c int) bool {
	switch op {
	case CmpEqual:
		return c == 0
	case CmpNotEqual:
		return c != 0
	case CmpLess:
		return c < 0
	case CmpLessEqual:
		return c <= 0
	case CmpGreater:
		return c > 0
	case CmpGreaterEqual:
		return c >= 0
	}
	panic("bad op")
}

func (m *model) txn(rev uint64, txn Txn) (TxnResult, error) {
	if len(txn.Conditions) > m.limits.MaxConditions || len(txn.Then) > m.limits.MaxOps || len(txn.Else) > m.limits.MaxOps {
		return TxnResult{}, ErrTooManyOps
	}
	ok := true
	for _, c := range txn.Conditions {
		held, err := m.evalCondition(c)
		if err != nil {
			return TxnResult{}, err
		}
		ok = ok && held
	}
	ops := txn.Then
	if !ok {
		ops = txn.Else
	}
	res := TxnResult{Succeeded: ok, Results: []OpResult{}}
	rows := maps.Clone(m.rows)
	for _, op := range ops {
		r, err := m.applyOp(rows, rev, op)
		if err != nil {
			return TxnResult{}, err
		}
		res.Results = append(res.Results, r)
	}
	m.rows = rows
	return res, nil
}

func (m *model) applyOp(rows map[int64]mRow, rev uint64, op Op) (OpResult, error) {
	res := OpResult{Kind: op.Kind}
	if op.Table != modelTable {
		return res, ErrTableNotFound
	}
	switch op.Kind {
	case OpInsert, OpUpsert:
		id, fields, err := m.checkRow(op.Fields)
		if err != nil {
			return res, err
		}
		old, found := rows[id]
		if found && op.Kind == OpInsert {
			return res, ErrRowExists
		}
		if op.ExpectedVersion != 0 && op.ExpectedVersion != old.meta.Version {
			return res, ErrVersionMismatch
		}
		res.Meta, err = m.write(rows, rev, id, fields)
		return res, err
	case OpUpdate:
		if op.Key.kind != KindInt {
			return res, ErrTypeMismatch
		}
		id := op.Key.AsInt()
		old, found := rows[id]
		if !found {
			return res, ErrRowNotFound
		}
		if op.ExpectedVersion != 0 && op.ExpectedVersion != old.meta.Version {
			return res, ErrVersionMismatch
		}
		for _, u := range op.Unset {
			if !nameRE.MatchString(u) || u == "id" {
				return res, ErrInvalidArgument
			}
		}
		merged := []Field{{Name: "id", Value: op.Key}}
		for _, name := range slices.Sorted(maps.Keys(old.fields)) {
			if slices.Contains(op.Unset, name) || slices.ContainsFunc(op.Fields, func(f Field) bool { return f.Name == name }) {
				continue
			}
			merged = append(merged, Field{Name: name, Value: old.fields[name]})
		}
		for _, f := range op.Fields {
			if f.Name == "id" {
				if !f.Value.Equal(op.Key) {
					return res, ErrInvalidArgument
				}
				continue
			}
			if slices.Contains(op.Unset, f.Name) {
				return res, ErrInvalidArgument
			}
			merged = append(merged, f)
		}
		_, fields, err := m.checkRow(merged)
		if err != nil {
			return res, err
		}
		res.Meta, err = m.write(rows, rev, id, fields)
		return res, err
	case OpDelete:
		if op.Key.kind != KindInt {
			return res, ErrTypeMismatch
		}
		id := op.Key.AsInt()
		old, found := rows[id]
		if op.ExpectedVersion != 0 && op.ExpectedVersion != old.meta.Version {
			return res, ErrVersionMismatch
		}
		if found {
			delete(rows, id)
			res.Deleted = true
		}
		return res, nil
	case OpGet:
		if op.Key.kind != KindInt {
			return res, ErrTypeMismatch
		}
		if r, found := rows[op.Key.AsInt()]; found {
			res.Found = true
			res.Row = m.row(op.Key.AsInt(), r)
		}
		return res, nil
	}
	return res, ErrInvalidArgument
}

func (m *model) createIndex(ix IndexSchema) error {
	if slices.ContainsFunc(m.indexes, func(o IndexSchema) bool { return o.Name == ix.Name }) {
		return ErrIndexExists
	}
	if len(m.indexes) >= m.limits.MaxIndexes {
		return ErrTooLarge
	}
	for _, f := range ix.Fields {
		if _, ok := modelKinds[f]; !ok {
			return ErrInvalidArgument
		}
	}
	if ix.Unique {
		var seen [][]Value
		for id, r := range m.rows {
			if e, ok := entryOf(ix, id, r.fields); ok {
				if slices.ContainsFunc(seen, func(o []Value) bool { return compareTuples(o, e) == 0 }) {
					return ErrUniqueViolation
				}
				seen = append(seen, e)
			}
		}
	}
	m.indexes = append(m.indexes, ix)
	return nil
}

func (m *model) dropIndex(name string) error {
	i := slices.IndexFunc(m.indexes, func(o IndexSchema) bool { return o.Name == name })
	if i < 0 {
		return ErrIndexNotFound
	}
	m.indexes = slices.Delete(m.indexes, i, i+1)
	return nil
}

type mEntry struct {
	vals []Value
	id   int64
}

// entries returns the sorted entries of the primary key (index "") or of
// an index.
func (m *model) entries(index string) ([]mEntry, bool) {
	var out []mEntry
	if index == "" {
		for id := range m.rows {
			out = append(out, mEntry{[]Value{Int(id)}, id})
		}
	} else {
		i := slices.IndexFunc(m.indexes, func(o IndexSchema) bool { return o.Name == index })
		if i < 0 {
			return nil, false
		}
		for id, r := range m.rows {
			if e, ok := entryOf(m.indexes[i], id, r.fields); ok {
				out = append(out, mEntry{e, id})
			}
		}
	}
	slices.SortFunc(out, func(a, b mEntry) int {
		if c := compareTuples(a.vals, b.vals); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	return out, true
}

func (m *model) indexKinds(index string) []Kind {
	if index == "" {
		return []Kind{KindInt}
	}
	for _, ix := range m.indexes {
		if ix.Name == index {
			var out []Kind
			for _, f := range ix.Fields {
				out = append(out, modelKinds[f])
			}
			return out
		}
	}
	return nil
}

// scan is the model of a scan without its limit and cursor: the rows in
// range, in scan order.
func (m *model) scan(o ScanOptions) ([]Row, error) {
	ents, ok := m.entries(o.Index)
	if !ok {
		return nil, ErrIndexNotFound
	}
	kinds := m.indexKinds(o.Index)
	for _, vals := range [][]Value{o.Prefix, o.Start, o.End} {
		if len(vals) > len(kinds) {
			return nil, ErrInvalidArgument
		}
		for i, v := range vals {
			if !mValidValue(v) {
				return nil, ErrInvalidArgument
			}
			if v.kind != kinds[i] {
				return nil, ErrTypeMismatch
			}
		}
	}
	if o.PartialLast && len(o.Prefix) > 0 {
		if k := o.Prefix[len(o.Prefix)-1].kind; k != KindString && k != KindBytes {
			return nil, ErrInvalidArgument
		}
	}
	var out []Row
	for _, e := range ents {
		if len(o.Prefix) > 0 {
			p := o.Prefix
			if o.PartialLast {
				last := p[len(p)-1]
				v := e.vals[len(p)-1]
				if compareTuples(e.vals[:len(p)-1], p[:len(p)-1]) != 0 || v.kind != last.kind || !strings.HasPrefix(v.s, last.s) {
					continue
				}
			} else if compareTuples(e.vals[:len(p)], p) != 0 {
				continue
			}
		}
		if len(o.Start) > 0 {
			c := compareTuples(e.vals[:len(o.Start)], o.Start)
			if c < 0 || (c == 0 && o.StartExclusive) {
				continue
			}
		}
		if len(o.End) > 0 {
			c := compareTuples(e.vals[:len(o.End)], o.End)
			if c > 0 || (c == 0 && !o.EndInclusive) {
				continue
			}
		}
		r := m.row(e.id, m.rows[e.id])
		if o.KeysOnly {
			r.Fields = r.Fields[:0:0]
			r.Fields = append(r.Fields, Field{Name: "id", Value: Int(e.id)})
		}
		out = append(out, r)
	}
	if o.Reverse {
		slices.Reverse(out)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Random commands.

type gen struct {
	r *rand.Rand
	m *model
}

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

func (g *gen) id() int64 { return int64(g.r.IntN(30)) }

func (g *gen) key() Value {
	if g.chance(0.02) {
		return String("k")
	}
	return Int(g.id())
}

func (g *gen) table() string {
	if g.chance(0.01) {
		return "nope"
	}
	return modelTable
}

func (g *gen) value(field string) Value {
	switch field {
	case "id":
		return Int(int64(g.r.IntN(34) - 2))
	case "s":
		s := sPool[g.r.IntN(len(sPool))]
		if g.chance(0.1) {
			s += sPool[g.r.IntN(len(sPool))]
		}
		return String(s)
	case "n":
		return Int(nPool[g.r.IntN(len(nPool))])
	case "g":
		return String(gPool[g.r.IntN(len(gPool))])
	case "d":
		return Double(interestingDbls[g.r.IntN(len(interestingDbls))])
	}
	return randValue(g.r)
}

// fieldValue returns a value for a row field: mostly well typed, sometimes
// null.
func (g *gen) fieldValue(field string) Value {
	if field != "g" && g.chance(0.1) {
		return Null()
	}
	return g.value(field)
}

func (g *gen) rowFields(id int64) []Field {
	fields := []Field{{Name: "id", Value: Int(id)}}
	for _, f := range []struct {
		name string
		p    float64
	}{{"s", 0.6}, {"n", 0.7}, {"g", 0.97}, {"d", 0.4}, {"x", 0.3}} {
		if g.chance(f.p) {
			fields = append(fields, Field{Name: f.name, Value: g.fieldValue(f.name)})
		}
	}
	g.r.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	if g.chance(0.08) {
		fields = g.defect(fields)
	}
	return fields
}

// defect spoils a row in one of several ways.
func (g *gen) defect(fields []Field) []Field {
	i := g.r.IntN(len(fields))
	switch g.r.IntN(9) {
	case 0: // wrong kind
		fields[i].Value = []Value{Bool(true), Bytes([]byte("b")), TimestampNanos(1), Double(1), Int(1)}[g.r.IntN(5)]
	case 1:
		fields[i].Value = Double(math.NaN())
	case 2:
		fields[i].Value = String("bad\xff")
	case 3: // drop a field (the primary key, perhaps)
		fields = slices.Delete(fields, i, i+1)
	case 4:
		fields = append(fields, Field{Name: fields[i].Name, Value: fields[i].Value})
	case 5:
		fields[i].Name = []string{"", "9x", "a-b", strings.Repeat("x", 65)}[g.r.IntN(4)]
	case 6:
		for j := 0; j < 8; j++ {
			fields = append(fields, Field{Name: "x" + itoa(j), Value: Int(1)})
		}
	case 7:
		fields = append(fields, Field{Name: "id", Value: Null()})
		fields = slices.Delete(fields, i, i+1)
	case 8:
		fields[i].Value = Value{kind: 42}
	}
	return fields
}

func (g *gen) expectedVersion(key Value) uint64 {
	if !g.chance(0.15) {
		return 0
	}
	if r, ok := g.m.rows[key.AsInt()]; ok && g.chance(0.7) {
		return r.meta.Version
	}
	return uint64(g.r.IntN(4))
}

func (g *gen) op() Op {
	switch k := g.r.IntN(10); {
	case k < 2:
		return Op{Kind: OpInsert, Table: g.table(), Fields: g.rowFields(g.id())}
	case k < 5:
		f := g.rowFields(g.id())
		var ev uint64
		if i := slices.IndexFunc(f, func(f Field) bool { return f.Name == "id" }); i >= 0 {
			ev = g.expectedVersion(f[i].Value)
		}
		return Op{Kind: OpUpsert, Table: g.table(), Fields: f, ExpectedVersion: ev}
	case k < 7:
		key := g.key()
		op := Op{Kind: OpUpdate, Table: g.table(), Key: key, ExpectedVersion: g.expectedVersion(key)}
		for _, name := range []string{"s", "n", "g", "d", "x", "y"} {
			switch {
			case g.chance(0.3):
				op.Fields = append(op.Fields, Field{Name: name, Value: g.fieldValue(name)})
			case name != "g" && g.chance(0.15):
				op.Unset = append(op.Unset, name)
			}
		}
		if g.chance(0.1) {
			switch g.r.IntN(7) {
			case 0:
				op.Unset = append(op.Unset, "g")
			case 1:
				op.Unset = append(op.Unset, "id")
			case 2:
				op.Fields = append(op.Fields, Field{Name: "id", Value: Int(key.AsInt() + 1)})
			case 3:
				op.Fields = append(op.Fields, Field{Name: "id", Value: key}) // allowed
			case 4:
				op.Fields = append(op.Fields, Field{Name: "d", Value: Double(0)})
				op.Unset = append(op.Unset, "d")
			case 5:
				op.Unset = append(op.Unset, "no such")
			case 6:
				if len(op.Fields) > 0 {
					op.Fields = g.defect(op.Fields)
				}
			}
		}
		return op
	case k < 9:
		key := g.key()
		return Op{Kind: OpDelete, Table: g.table(), Key: key, ExpectedVersion: g.expectedVersion(key)}
	default:
		if g.chance(0.05) {
			return Op{Kind: OpKind(g.r.IntN(2) * 9), Table: modelTable, Key: Int(1)}
		}
		return Op{Kind: OpGet, Table: g.table(), Key: g.key()}
	}
}

func (g *gen) condition() Condition {
	c := Condition{Table: g.table(), Key: g.key(), Op: CompareOp(g.r.IntN(6))}
	if g.chance(0.02) {
		c.Op = 6
	}
	switch g.r.IntN(6) {
	case 0:
		c.Test = CondExists
	case 1:
		c.Test = CondNotExists
	case 2:
		c.Test = CondVersion
		c.Number = uint64(g.r.IntN(4))
	case 3:
		c.Test = []CondTest{CondModRevision, CondCreateRevision}[g.r.IntN(2)]
		c.Number = uint64(g.r.IntN(200))
		if r, ok := g.m.rows[c.Key.AsInt()]; ok && g.chance(0.7) {
			n := r.meta.ModRevision
			if c.Test == CondCreateRevision {
				n = r.meta.CreateRevision
			}
			c.Number = n + uint64(g.r.IntN(3)) - 1
		}
	case 4, 5:
		c.Test = CondField
		c.Field = []string{"id", "s", "n", "g", "d", "x"}[g.r.IntN(6)]
		c.Value = g.fieldValue(c.Field)
		if g.chance(0.1) {
			c.Value = g.value("x")
		}
	}
	if g.chance(0.01) {
		c.Test = 0
	}
	return c
}

func (g *gen) txn() Txn {
	var t Txn
	nc := g.r.IntN(3)
	if g.chance(0.03) {
		nc = 4
	}
	for i := 0; i < nc; i++ {
		t.Conditions = append(t.Conditions, g.condition())
	}
	n := 1 + g.r.IntN(3)
	if g.chance(0.03) {
		n = 6
	}
	for i := 0; i < n; i++ {
		t.Then = append(t.Then, g.op())
	}
	if nc > 0 {
		for i := g.r.IntN(3); i > 0; i-- {
			t.Else = append(t.Else, g.op())
		}
	}
	return t
}

func (g *gen) boundTuple(index string, max int) []Value {
	var fields []string
	if index == "" {
		fields = []string{"id"}
	} else {
		for _, ix := range g.m.indexes {
			if ix.Name == index {
				fields = ix.Fields
			}
		}
	}
	n := 1 + g.r.IntN(len(fields))
	if max > 0 {
		n = min(n, max)
	}
	out := make([]Value, n)
	for i := range out {
		out[i] = g.value(fields[i])
	}
	if g.chance(0.01) {
		out[g.r.IntN(n)] = String("\xff")
	}
	if g.chance(0.01) {
		out[g.r.IntN(n)] = Bool(true)
	}
	return out
}

func (g *gen) scanOptions() ScanOptions {
	var o ScanOptions
	if k := g.r.IntN(len(g.m.indexes) + 1); k < len(g.m.indexes) {
		o.Index = g.m.indexes[k].Name
	}
	if g.chance(0.4) {
		o.Prefix = g.boundTuple(o.Index, 0)
		if l := o.Prefix[len(o.Prefix)-1]; l.kind == KindString && g.chance(0.5) {
			o.PartialLast = true
			if g.chance(0.5) && len(l.s) > 0 {
				o.Prefix[len(o.Prefix)-1] = String(l.s[:g.r.IntN(len(l.s))])
			}
		}
	}
	if g.chance(0.4) {
		o.Start = g.boundTuple(o.Index, 0)
		o.StartExclusive = g.chance(0.5)
	}
	if g.chance(0.4) {
		o.End = g.boundTuple(o.Index, 0)
		o.EndInclusive = g.chance(0.5)
	}
	o.Reverse = g.chance(0.5)
	o.KeysOnly = g.chance(0.1)
	return o
}

// ---------------------------------------------------------------------------
// Comparison.

func sameRow(a, b Row) bool {
	return a.Meta == b.Meta && slices.EqualFunc(a.Fields, b.Fields, func(x, y Field) bool {
		return x.Name == y.Name && x.Value.Equal(y.Value)
	})
}

func fmtRows(rows []Row) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString("{")
		for i, f := range r.Fields {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s=%v", f.Name, f.Value)
		}
		fmt.Fprintf(&b, " %+v} ", r.Meta)
	}
	return b.String()
}

func sameErr(got, want error) bool {
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

// checkView compares a view with the model.
func checkView(tb testing.TB, r *rand.Rand, m *model, v *View) {
	tb.Helper()
	g := &gen{r: r, m: m}
	// Gets.
	for id := int64(-2); id < 32; id++ {
		row, found, err := v.Get(modelTable, Int(id))
		r, want := m.rows[id]
		if err != nil || found != want || (found && !sameRow(row, m.row(id, r))) {
			tb.Fatalf("Get(%d) = %s %v %v; want %s %v", id, fmtRows([]Row{row}), found, err, fmtRows([]Row{m.row(id, r)}), want)
		}
	}
	// Schema and counts.
	info, err := v.Table(modelTable)
	if err != nil {
		tb.Fatal(err)
	}
	if !slices.EqualFunc(info.Schema.Indexes, m.indexes, func(a, b IndexSchema) bool {
		return a.Name == b.Name && a.Unique == b.Unique && slices.Equal(a.Fields, b.Fields)
	}) {
		tb.Fatalf("indexes %+v, want %+v", info.Schema.Indexes, m.indexes)
	}
	var bytes int64
	_ = v.Rows(modelTable, func(raw string) bool { bytes += int64(len(raw)); return true })
	if info.Rows != len(m.rows) || info.Bytes != bytes {
		tb.Fatalf("info rows %d bytes %d, want %d and %d", info.Rows, info.Bytes, len(m.rows), bytes)
	}
	// Full scans of the primary key and every index, both ways.
	for _, ix := range append([]string{""}, indexNames(m)...) {
		for _, rev := range []bool{false, true} {
			checkScan(tb, m, v, ScanOptions{Index: ix, Reverse: rev})
		}
	}
	// Random bounded scans, paged.
	for i := 0; i < 4; i++ {
		o := g.scanOptions()
		if g.chance(0.5) {
			o.Limit = 1 + g.r.IntN(6)
		}
		checkScan(tb, m, v, o)
	}
	// An unknown index.
	if _, err := v.Scan(modelTable, ScanOptions{Index: "opt_none"}); !errors.Is(err, ErrIndexNotFound) {
		tb.Fatalf("scan of an unknown index: %v", err)
	}
}

func indexNames(m *model) []string {
	var out []string
	for _, ix := range m.indexes {
		out = append(out, ix.Name)
	}
	return out
}

// checkScan compares a scan, page by page when o has a limit, and its
// count with the model.
func checkScan(tb testing.TB, m *model, v *View, o ScanOptions) {
	tb.Helper()
	want, werr := m.scan(o)
	n, err := v.Count(modelTable, o)
	if !sameErr(err, werr) || (werr == nil && n != len(want)) {
		tb.Fatalf("Count(%+v) = %d, %v; want %d, %v", o, n, err, len(want), werr)
	}
	var got []Row
	for page := 0; ; page++ {
		res, err := v.Scan(modelTable, o)
		if !sameErr(err, werr) {
			tb.Fatalf("Scan(%+v): %v, want %v", o, err, werr)
		}
		if werr != nil {
			return
		}
		rest := want[len(got):]
		if o.Limit > 0 && len(rest) > o.Limit {
			if len(res.Rows) != o.Limit || res.Next == nil {
				tb.Fatalf("Scan(%+v) page %d: %d rows, next %x; want %d rows and a cursor", o, page, len(res.Rows), res.Next, o.Limit)
			}
		} else if len(res.Rows) != len(rest) || res.Next != nil {
			tb.Fatalf("Scan(%+v) page %d: %d rows, next %x; want the last %d rows\n got %s\nwant %s", o, page, len(res.Rows), res.Next, len(rest), fmtRows(res.Rows), fmtRows(rest))
		}
		got = append(got, res.Rows...)
		if res.Next == nil {
			break
		}
		o.After = res.Next
	}
	if !slices.EqualFunc(got, want, sameRow) {
		tb.Fatalf("Scan(%+v):\n got %s\nwant %s", o, fmtRows(got), fmtRows(want))
	}
}

// ---------------------------------------------------------------------------

func TestModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, uint64(time.Now().UnixNano())}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	steps := *modelSteps
	if testing.Short() {
		steps /= 5
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("reproduce with -run 'TestModel' -model.seed=%d", seed)
			runModel(t, seed, steps)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s, err := New(Options{Limits: modelLimits()})
	if err != nil {
		t.Fatal(err)
	}
	m := &model{rows: map[int64]mRow{}, limits: modelLimits()}
	g := &gen{r: r, m: m}
	rev := uint64(1)
	b := s.Begin()
	if err := b.CreateTable(rev, modelSchema()); err != nil {
		t.Fatal(err)
	}
	b.Commit()
	m.indexes = slices.Clone(modelSchema().Indexes)

	type held struct {
		v *View
		m *model
	}
	var holds []held
	stats := map[string]int{}
	for step := 0; step < steps; step++ {
		before := s.View()
		hash := before.Hash()
		b := s.Begin()
		n := 1
		if g.chance(0.2) {
			n = 2 + g.r.IntN(2)
		}
		failed := 0
		var desc []string
		for i := 0; i < n; i++ {
			rev++
			var got, want error
			switch k := g.r.IntN(100); {
			case k < 90:
				txn := g.txn()
				// CheckTxn, on the last committed view, is what servers
				// run at the edge.
				cerr := before.CheckTxn(txn, m.limits)
				res, err := b.Txn(rev, txn)
				checkCheckTxn(t, step, txn, cerr, err)
				if cerr == nil {
					stats["checktxn-passed"]++
				}
				wres, werr := m.txn(rev, txn)
				got, want = err, werr
				desc = append(desc, fmt.Sprintf("txn %+v", txn))
				if err == nil && werr == nil {
					if res.Succeeded != wres.Succeeded || len(res.Results) != len(wres.Results) {
						t.Fatalf("step %d: txn %+v: result %+v, want %+v", step, txn, res, wres)
					}
					for j := range res.Results {
						a, w := res.Results[j], wres.Results[j]
						if a.Kind != w.Kind || a.Meta != w.Meta || a.Deleted != w.Deleted || a.Found != w.Found || !sameRow(a.Row, w.Row) {
							t.Fatalf("step %d: txn %+v: result %d = %+v, want %+v", step, txn, j, a, w)
						}
					}
				}
			case k < 96:
				ix := modelOptionalIndexes[g.r.IntN(len(modelOptionalIndexes))]
				if g.chance(0.3) {
					ix = modelSchema().Indexes[g.r.IntN(3)]
				}
				got = b.CreateIndex(rev, modelTable, ix)
				want = m.createIndex(ix)
				desc = append(desc, fmt.Sprintf("create index %+v", ix))
			case k < 99:
				name := "opt_none"
				if len(m.indexes) > 0 && g.chance(0.9) {
					name = m.indexes[g.r.IntN(len(m.indexes))].Name
				}
				got = b.DropIndex(rev, modelTable, name)
				want = m.dropIndex(name)
				desc = append(desc, "drop index "+name)
			default:
				got = b.Advance(rev)
				desc = append(desc, "advance")
			}
			if !sameErr(got, want) {
				t.Fatalf("step %d: %s: error %v, want %v", step, desc[len(desc)-1], got, want)
			}
			if got != nil {
				failed++
				stats[errName(got)]++
			} else {
				stats["ok"]++
			}
		}
		if s.View() != before {
			t.Fatalf("step %d: the view changed before Commit", step)
		}
		v := b.Commit()
		if v.Revision() != rev {
			t.Fatalf("step %d: view revision %d, want %d", step, v.Revision(), rev)
		}
		if failed == n && v.Hash() != hash {
			t.Fatalf("step %d: failed commands changed the store: %v", step, desc)
		}
		checkTableInvariants(t, s.tables[modelTable])
		checkTableInvariants(t, v.tables[modelTable])
		checkView(t, r, m, v)
		if step%200 == 0 {
			holds = append(holds, held{v, m.clone()})
		}
	}
	// Views held along the way still show their state.
	for _, h := range holds {
		checkView(t, r, h.m, h.v)
	}
	t.Logf("outcomes: %v; final rows %d, indexes %v", stats, len(m.rows), indexNames(m))
	// The test must exercise both successes and each kind of failure.
	for _, k := range []string{"ok", "invalid", "type", "exists", "notfound", "unique", "version", "toomany", "toolarge", "indexexists", "indexnotfound", "tablenotfound"} {
		if stats[k] == 0 && steps >= 1000 {
			t.Errorf("no %q outcome in %d steps", k, steps)
		}
	}
}

func errName(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{ErrInvalidArgument, "invalid"}, {ErrTypeMismatch, "type"}, {ErrRowExists, "exists"}, {ErrRowNotFound, "notfound"},
		{ErrUniqueViolation, "unique"}, {ErrVersionMismatch, "version"}, {ErrTooManyOps, "toomany"}, {ErrTooLarge, "toolarge"},
		{ErrIndexExists, "indexexists"}, {ErrIndexNotFound, "indexnotfound"}, {ErrTableNotFound, "tablenotfound"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return err.Error()
}

// checkTableInvariants checks that a table's indexes hold exactly the
// entries of its rows, and its byte count.
func checkTableInvariants(tb testing.TB, t *table) {
	tb.Helper()
	want := make([][]string, len(t.indexes))
	var bytes int64
	t.rows.Scan(func(raw string) bool {
		bytes += int64(len(raw))
		ents, _, err := t.rowEntries(raw)
		if err != nil {
			tb.Fatalf("stored row %x: %v", raw, err)
		}
		for i, e := range ents {
			if e != "" {
				want[i] = append(want[i], e)
			}
		}
		return true
	})
	if bytes != t.bytes {
		tb.Fatalf("table %s: bytes %d, rows add up to %d", t.schema.Name, t.bytes, bytes)
	}
	for i, ix := range t.indexes {
		var got []string
		ix.tree.Scan(func(e string) bool { got = append(got, e); return true })
		slices.Sort(want[i])
		if !slices.Equal(got, want[i]) {
			tb.Fatalf("table %s index %s: entries\n %q\nwant\n %q", t.schema.Name, ix.def.Name, got, want[i])
		}
	}
}

// checkCheckTxn relates CheckTxn's verdict to the outcome of applying the
// transaction. CheckTxn promises no success, and it refuses some requests
// that applying would not (a bad operation in the branch that does not
// run), but what it passes must not fail for a reason it checks: unknown
// tables, type mismatches, too many operations, malformed names and values.
func checkCheckTxn(tb testing.TB, step int, txn Txn, checkErr, applyErr error) {
	tb.Helper()
	if checkErr != nil {
		for _, e := range []error{ErrInvalidArgument, ErrTypeMismatch, ErrTableNotFound, ErrTooManyOps, ErrTooLarge} {
			if errors.Is(checkErr, e) {
				return
			}
		}
		tb.Fatalf("step %d: CheckTxn(%+v) = %v: not an input error", step, txn, checkErr)
	}
	for _, e := range []error{ErrTypeMismatch, ErrTableNotFound, ErrTooManyOps, ErrInvalidArgument} {
		if errors.Is(applyErr, e) && !(e == ErrInvalidArgument && updateSetsFieldTwice(txn)) {
			tb.Fatalf("step %d: CheckTxn passed %+v, which fails with %v", step, txn, applyErr)
		}
	}
}

// updateSetsFieldTwice reports whether an update of the transaction sets
// one field twice, which CheckTxn does not look for.
func updateSetsFieldTwice(txn Txn) bool {
	for _, op := range append(slices.Clone(txn.Then), txn.Else...) {
		if op.Kind != OpUpdate {
			continue
		}
		seen := map[string]bool{}
		for _, f := range op.Fields {
			if seen[f.Name] {
				return true
			}
			seen[f.Name] = true
		}
	}
	return false
}
