package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// identity is what a data directory remembers about the node it belongs
// to, so that it cannot be reused by another node or cluster by mistake.
type identity struct {
	NodeID string `json:"node_id"`
	// ClusterToken is the digest of the initial member list for a
	// bootstrapped node, empty for one that joined.
	ClusterToken []byte `json:"cluster_token,omitempty"`
	// LogStore is where the Raft log is kept (LogStoreWAL, LogStoreBolt);
	// empty in directories written before there was a choice: raft-boltdb.
	LogStore string `json:"log_store,omitempty"`
}

const identityFile = "node.json"

// checkIdentity loads the data directory's identity, or writes it when the
// directory is new. It refuses a directory that belongs to another node,
// or to another cluster than the initial member list describes.
func checkIdentity(dir, id string, token []byte, fresh bool, logStore string) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if !fresh {
			return identity{}, fmt.Errorf("data dir %s holds Raft state but no %s; it was not created by memdbd", dir, identityFile)
		}
		idt := identity{NodeID: id, ClusterToken: token, LogStore: logStore}
		return idt, writeIdentity(dir, idt)
	case err != nil:
		return identity{}, err
	}
	var idt identity
	if err := json.Unmarshal(b, &idt); err != nil {
		return identity{}, fmt.Errorf("%s is corrupt: %w", path, err)
	}
	if idt.NodeID != id {
		return identity{}, fmt.Errorf("data dir %s belongs to node %q, not %q; use that node id or another data dir", dir, idt.NodeID, id)
	}
	if fresh {
		// The identity file exists but Raft has no state: a crash during the
		// first start. Keep the identity and bootstrap again.
		return idt, nil
	}
	if token != nil && idt.ClusterToken != nil && string(token) != string(idt.ClusterToken) {
		return identity{}, fmt.Errorf("data dir %s belongs to a cluster bootstrapped from a different --initial-cluster; "+
			"restart with the original list (or none), or use an empty data dir for a new cluster", dir)
	}
	return idt, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
