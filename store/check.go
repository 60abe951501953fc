package store

import "fmt"

// CheckTxn validates a transaction against this view's schemas and the
// limits without applying it: unknown tables, malformed names and values,
// type mismatches, missing keys and oversize keys or rows. Servers call it
// at the edge so that bad input is refused before it enters the log; the
// state machine checks again when it applies (the schema may have changed
// in between), so CheckTxn passing is no promise that the write succeeds.
func (v *View) CheckTxn(txn Txn, l Limits) error {
	if len(txn.Conditions) > l.MaxConditions {
		return fmt.Errorf("%d conditions, limit %d: %w", len(txn.Conditions), l.MaxConditions, ErrTooManyOps)
	}
	if n := max(len(txn.Then), len(txn.Else)); n > l.MaxOps {
		return fmt.Errorf("%d operations in a branch, limit %d: %w", n, l.MaxOps, ErrTooManyOps)
	}
	for i, c := range txn.Conditions {
		t, err := v.table(c.Table)
		if err != nil {
			return fmt.Errorf("condition %d: %w", i, err)
		}
		if _, err := t.encodeKey(c.Key, l.MaxKeyBytes); err != nil {
			return fmt.Errorf("condition %d: %w", i, err)
		}
		if c.Test == CondField {
			if err := validateName(c.Field); err != nil {
				return fmt.Errorf("condition %d: %w", i, err)
			}
			if err := validateValue(c.Value); err != nil {
				return fmt.Errorf("condition %d: %w", i, err)
			}
		}
		if c.Test < CondExists || c.Test > CondField || c.Op > CmpGreaterEqual {
			return fmt.Errorf("condition %d: %w: unknown test or comparison", i, ErrInvalidArgument)
		}
	}
	for _, branch := range [][]Op{txn.Then, txn.Else} {
		for i, op := range branch {
			if err := v.checkOp(op, l); err != nil {
				if len(branch) > 1 {
					return fmt.Errorf("operation %d: %w", i, err)
				}
				return err
			}
		}
	}
	return nil
}

func (v *View) checkOp(op Op, l Limits) error {
	t, err := v.table(op.Table)
	if err != nil {
		return err
	}
	if op.TTL < 0 || op.TTL > MaxTTL {
		return fmt.Errorf("%w: time to live %v is outside 0 to %v", ErrInvalidArgument, op.TTL, MaxTTL)
	}
	if op.ClearTTL && (op.Kind != OpUpdate || op.TTL > 0) {
		return fmt.Errorf("%w: table %s: clear_ttl applies to an update without ttl_ms", ErrInvalidArgument, t.schema.Name)
	}
	if op.TTL > 0 && (op.Kind == OpDelete || op.Kind == OpGet) {
		return fmt.Errorf("%w: table %s: a time to live applies to writes only", ErrInvalidArgument, t.schema.Name)
	}
	switch op.Kind {
	case OpInsert, OpUpsert:
		pk, fields, err := t.checkRow(op.Fields, l)
		if err != nil {
			return err
		}
		key, err := t.encodeKey(pk, l.MaxKeyBytes)
		if err != nil {
			return err
		}
		// Sized, not encoded: the edge only needs the length, and encoding
		// would allocate and copy the whole row once more per write.
		if n := encodedRowSize(key, fields); n > l.MaxRowBytes {
			return fmt.Errorf("table %s: row of about %d bytes, limit %d: %w", t.schema.Name, n, l.MaxRowBytes, ErrTooLarge)
		}
		return nil
	case OpUpdate:
		if _, err := t.encodeKey(op.Key, l.MaxKeyBytes); err != nil {
			return err
		}
		if len(op.Fields) > l.MaxFields {
			return fmt.Errorf("table %s: update sets %d fields, limit %d: %w", t.schema.Name, len(op.Fields), l.MaxFields, ErrTooLarge)
		}
		// Merging into an empty row checks every set and unset field (names,
		// values, declared types, the primary key) without the stored row.
		merged, err := t.mergeUpdate(op, nil)
		if err != nil {
			return err
		}
		for _, f := range merged {
			if err := t.checkField(f); err != nil {
				return err
			}
			if decl, ok := t.schema.Field(f.Name); ok && decl.Required && f.Value.kind == KindNull {
				return fmt.Errorf("%w: table %s: required field %s cannot be null", ErrInvalidArgument, t.schema.Name, f.Name)
			}
		}
		for _, name := range op.Unset {
			if decl, ok := t.schema.Field(name); ok && decl.Required {
				return fmt.Errorf("%w: table %s: required field %s cannot be unset", ErrInvalidArgument, t.schema.Name, name)
			}
		}
		return nil
	case OpDelete, OpGet, OpTouch:
		_, err := t.encodeKey(op.Key, l.MaxKeyBytes)
		return err
	}
	return fmt.Errorf("%w: unknown operation kind %d", ErrInvalidArgument, op.Kind)
}

// CheckSchema validates a table schema against the limits.
func CheckSchema(s TableSchema, l Limits) error { return s.Validate(l) }
