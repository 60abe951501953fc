// Package wire holds the field numbers of the memdb.v1 messages that the
// server writes by hand (server/watchwire.go, server/readwire.go) and the
// client SDK reads by hand (client/readwire.go), in one place for both
// sides. Tests on each side check the bytes against the generated code.
package wire

// Field numbers (api/proto/memdb/v1).
const (
	RowFields  = 1 // Row.fields: map entries
	RowCreate  = 2
	RowMod     = 3
	RowVersion = 4
	RowExpires = 5

	EntryKey   = 1 // map entry
	EntryValue = 2

	ValNull      = 1 // Value.kind
	ValString    = 2
	ValInt       = 3
	ValDouble    = 4
	ValBool      = 5
	ValBytes     = 6
	ValTimestamp = 7

	TsSeconds = 1 // google.protobuf.Timestamp
	TsNanos   = 2

	ResultFound = 1 // GetResult
	ResultRow   = 2

	BatchHeader  = 1 // BatchGetResponse
	BatchResults = 2
)
