package store

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// FieldType is the declared type of a schema field.
type FieldType uint8

// Field types. A field of type T holds values of the matching Kind (or null
// when the field is not required).
const (
	TypeUnspecified FieldType = iota
	TypeString
	TypeInt
	TypeDouble
	TypeBool
	TypeBytes
	TypeTimestamp
)

var typeKinds = [...]Kind{KindNull, KindString, KindInt, KindDouble, KindBool, KindBytes, KindTimestamp}

// Kind returns the value kind the type holds.
func (t FieldType) Kind() Kind {
	if int(t) < len(typeKinds) {
		return typeKinds[t]
	}
	return KindNull
}

func (t FieldType) String() string {
	if t == TypeUnspecified || int(t) >= len(typeKinds) {
		return "unspecified"
	}
	return t.Kind().String()
}

// TableSchema declares a table.
type TableSchema struct {
	// Name of the table; see validateName.
	Name string
	// PrimaryKey names the declared field that identifies a row.
	PrimaryKey string
	// Fields declares typed fields. Rows may carry other fields of any kind.
	Fields []FieldSchema
	// Indexes declares secondary indexes.
	Indexes []IndexSchema
}

// FieldSchema declares one typed field.
type FieldSchema struct {
	Name string
	Type FieldType
	// Required fields must be present and non-null. The primary key always is.
	Required bool
}

// IndexSchema declares a secondary index on declared fields, compared field
// by field. Rows where an indexed field is absent or null are left out of
// the index (a sparse index), so a unique index admits many such rows.
type IndexSchema struct {
	Name   string
	Fields []string
	Unique bool
}

// Limits bound what one command may carry. They are part of the
// replicated semantics: every replica must use the same values, so the
// state machine uses DefaultLimits and servers apply tighter, configurable
// limits at the edge.
type Limits struct {
	// MaxKeyBytes bounds the encoded primary key, in bytes.
	MaxKeyBytes int
	// MaxRowBytes bounds an encoded row, in bytes.
	MaxRowBytes int
	// MaxFields bounds the fields of one row.
	MaxFields int
	// MaxOps bounds the operations of one transaction branch.
	MaxOps int
	// MaxConditions bounds the conditions of one transaction.
	MaxConditions int
	// MaxIndexes bounds the secondary indexes of one table.
	MaxIndexes int
	// MaxIndexFields bounds the fields of one index.
	MaxIndexFields int
	// MaxTables bounds the number of tables.
	MaxTables int
}

// DefaultLimits returns the hard limits of the replicated state machine.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:    4 << 10,
		MaxRowBytes:    8 << 20,
		MaxFields:      1024,
		MaxOps:         10000,
		MaxConditions:  10000,
		MaxIndexes:     64,
		MaxIndexFields: 8,
		MaxTables:      4096,
	}
}

// Validate checks the limits against each other.
func (l Limits) Validate() error {
	switch {
	case l.MaxKeyBytes < 16:
		return fmt.Errorf("%w: MaxKeyBytes must be at least 16", ErrInvalidArgument)
	case l.MaxRowBytes < l.MaxKeyBytes:
		return fmt.Errorf("%w: MaxRowBytes must be at least MaxKeyBytes", ErrInvalidArgument)
	case l.MaxFields < 1, l.MaxOps < 1, l.MaxConditions < 0, l.MaxIndexes < 0, l.MaxIndexFields < 1, l.MaxTables < 1:
		return fmt.Errorf("%w: limits must be positive", ErrInvalidArgument)
	}
	return nil
}

const maxNameLen = 64

// validateName checks a table, field or index name: an ASCII letter or
// underscore, then up to 63 letters, digits or underscores. Keeping names
// to this set makes them safe in metric labels, logs and shell commands.
func validateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidArgument)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: name %.16q... is longer than %d bytes", ErrInvalidArgument, name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			if !utf8.ValidString(name) {
				return fmt.Errorf("%w: name is not valid UTF-8", ErrInvalidArgument)
			}
			return fmt.Errorf("%w: name %q must match [A-Za-z_][A-Za-z0-9_]*", ErrInvalidArgument, name)
		}
	}
	return nil
}

// Field returns the declared field of that name.
func (s *TableSchema) Field(name string) (FieldSchema, bool) {
	for _, f := range s.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return FieldSchema{}, false
}

// Index returns the index of that name.
func (s *TableSchema) Index(name string) (IndexSchema, bool) {
	for _, ix := range s.Indexes {
		if ix.Name == name {
			return ix, true
		}
	}
	return IndexSchema{}, false
}

// Validate checks the schema on its own and against the limits.
func (s *TableSchema) Validate(l Limits) error {
	if err := validateName(s.Name); err != nil {
		return fmt.Errorf("table name: %w", err)
	}
	if len(s.Fields) > l.MaxFields {
		return fmt.Errorf("table %s: %d fields declared, limit %d: %w", s.Name, len(s.Fields), l.MaxFields, ErrTooLarge)
	}
	seen := make(map[string]bool, len(s.Fields))
	for _, f := range s.Fields {
		if err := validateName(f.Name); err != nil {
			return fmt.Errorf("table %s: field name: %w", s.Name, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: table %s: field %s declared twice", ErrInvalidArgument, s.Name, f.Name)
		}
		seen[f.Name] = true
		if f.Type == TypeUnspecified || int(f.Type) >= len(typeKinds) {
			return fmt.Errorf("%w: table %s: field %s has no valid type", ErrInvalidArgument, s.Name, f.Name)
		}
	}
	pk, ok := s.Field(s.PrimaryKey)
	if !ok {
		return fmt.Errorf("%w: table %s: primary key %q must be a declared field", ErrInvalidArgument, s.Name, s.PrimaryKey)
	}
	if pk.Type == TypeDouble {
		return fmt.Errorf("%w: table %s: primary key %s cannot be a double", ErrInvalidArgument, s.Name, pk.Name)
	}
	if len(s.Indexes) > l.MaxIndexes {
		return fmt.Errorf("table %s: %d indexes, limit %d: %w", s.Name, len(s.Indexes), l.MaxIndexes, ErrTooLarge)
	}
	names := make(map[string]bool, len(s.Indexes))
	for _, ix := range s.Indexes {
		if names[ix.Name] {
			return fmt.Errorf("%w: table %s: index %s declared twice", ErrInvalidArgument, s.Name, ix.Name)
		}
		names[ix.Name] = true
		if err := s.validateIndex(ix, l); err != nil {
			return err
		}
	}
	return nil
}

func (s *TableSchema) validateIndex(ix IndexSchema, l Limits) error {
	if err := validateName(ix.Name); err != nil {
		return fmt.Errorf("table %s: index name: %w", s.Name, err)
	}
	if len(ix.Fields) == 0 {
		return fmt.Errorf("%w: table %s: index %s has no fields", ErrInvalidArgument, s.Name, ix.Name)
	}
	if len(ix.Fields) > l.MaxIndexFields {
		return fmt.Errorf("table %s: index %s has %d fields, limit %d: %w", s.Name, ix.Name, len(ix.Fields), l.MaxIndexFields, ErrTooLarge)
	}
	for i, f := range ix.Fields {
		if _, ok := s.Field(f); !ok {
			return fmt.Errorf("%w: table %s: index %s: field %q is not declared", ErrInvalidArgument, s.Name, ix.Name, f)
		}
		if slices.Contains(ix.Fields[:i], f) {
			return fmt.Errorf("%w: table %s: index %s lists field %s twice", ErrInvalidArgument, s.Name, ix.Name, f)
		}
	}
	return nil
}

// clone returns a deep copy, so that callers cannot change a schema the
// store holds.
func (s *TableSchema) clone() *TableSchema {
	c := &TableSchema{Name: s.Name, PrimaryKey: s.PrimaryKey}
	c.Fields = slices.Clone(s.Fields)
	c.Indexes = make([]IndexSchema, len(s.Indexes))
	for i, ix := range s.Indexes {
		c.Indexes[i] = IndexSchema{Name: ix.Name, Fields: slices.Clone(ix.Fields), Unique: ix.Unique}
	}
	return c
}
