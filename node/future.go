package node

import (
	"reflect"
	"unsafe"

	"github.com/hashicorp/raft"
)

// shutdownChType is the type of the ShutdownCh field of hashicorp/raft's
// futures.
var shutdownChType = reflect.TypeFor[chan struct{}]()

// releaseAtShutdown makes f's Error return raft.ErrRaftShutdown once down
// is closed, if Raft has not answered f by then, and reports whether it
// could.
//
// Why reach into the library: hashicorp/raft leaves some futures
// unanswered forever when it shuts down (its issue 498, open since 2022).
// An Apply whose entry waits in the state machine's queue, or a
// leadership check or transfer still queued for the main loop, is never
// answered, and the goroutine that waits for it so that its caller can
// leave at a deadline (Apply, ReadIndex) blocks for the life of the
// process. The library's own remedy exists but is used only internally:
// every future embeds deferError, whose exported ShutdownCh field makes
// Error give up when that channel closes; the library sets it only for
// the futures of its snapshot code. This sets it for ours, before anyone
// waits. The field is read only by Error, on the waiter's goroutine, after
// this returns; the library never writes it for these futures. A library
// version without the field leaves f as it was, and
// TestFuturesAreReleasedAtShutdown fails.
func releaseAtShutdown(f raft.Future, down chan struct{}) bool {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		// errorFuture, a value: already answered.
		return false
	}
	field := v.Elem().FieldByName("ShutdownCh")
	if !field.IsValid() || field.Type() != shutdownChType || !field.CanAddr() {
		return false
	}
	ch := (*chan struct{})(unsafe.Pointer(field.UnsafeAddr()))
	if *ch == nil {
		*ch = down
	}
	return true
}
