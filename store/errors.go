package store

import "errors"

// Errors returned by the store. They are wrapped with details (the table,
// field or key concerned); test with errors.Is. A command that fails with
// any of them changes nothing.
var (
	// ErrInvalidArgument: a malformed name, value, schema or request.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrTypeMismatch: a value's kind does not match the declared field type.
	ErrTypeMismatch = errors.New("type mismatch")
	// ErrTableNotFound: no table of that name.
	ErrTableNotFound = errors.New("table not found")
	// ErrTableExists: a table of that name exists already.
	ErrTableExists = errors.New("table already exists")
	// ErrIndexNotFound: no index of that name on the table.
	ErrIndexNotFound = errors.New("index not found")
	// ErrIndexExists: an index of that name exists already.
	ErrIndexExists = errors.New("index already exists")
	// ErrRowExists: insert of a primary key that is present.
	ErrRowExists = errors.New("row already exists")
	// ErrRowNotFound: update of a primary key that is absent.
	ErrRowNotFound = errors.New("row not found")
	// ErrUniqueViolation: the write would give two rows the same values in
	// a unique index.
	ErrUniqueViolation = errors.New("unique index violation")
	// ErrVersionMismatch: the row's version differs from the expected one.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrTooManyOps: the transaction has more operations than allowed.
	ErrTooManyOps = errors.New("too many operations")
	// ErrTooLarge: a key, row or schema exceeds its size limit.
	ErrTooLarge = errors.New("too large")
	// ErrCorrupt: stored or restored bytes are malformed.
	ErrCorrupt = errCorrupt
)
