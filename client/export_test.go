package client

import pb "github.com/memdbd/memdbd/api/proto/memdb/v1"

// ReasonErrors exposes the reason table to the external tests.
func ReasonErrors() map[string]error { return reasonErrors }

// PBReasons lists the server's reasons.
func PBReasons() []string { return pb.Reasons() }
