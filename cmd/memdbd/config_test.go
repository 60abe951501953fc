package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Flags beat the environment, which beats the file, which beats defaults.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "memdbd.yaml")
	if err := os.WriteFile(file, []byte("node-id: from-file\ndata-dir: /file\nheartbeat-timeout: 900ms\nmax-txn-ops: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"--config", file, "--node-id", "from-flag"},
		env(map[string]string{"MEMDBD_NODE_ID": "from-env", "MEMDBD_DATA_DIR": "/env"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.nodeID != "from-flag" || c.dataDir != "/env" || c.heartbeatTimeout != 900*time.Millisecond || c.maxTxnOps != 7 {
		t.Fatalf("got node %q data %q heartbeat %v ops %d", c.nodeID, c.dataDir, c.heartbeatTimeout, c.maxTxnOps)
	}
	if c.electionTimeout != 500*time.Millisecond {
		t.Fatalf("default election timeout %v", c.electionTimeout)
	}
	// The config file can also come from the environment.
	c, err = parseConfig(nil, env(map[string]string{"MEMDBD_CONFIG": file}), io.Discard)
	if err != nil || c.nodeID != "from-file" {
		t.Fatalf("config from env: %v %q", err, c.nodeID)
	}
}

// Bad settings fail with a message that names the setting.
func TestConfigErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("no-such-setting: 1\n"), 0o600)
	typo := filepath.Join(dir, "typo.yaml")
	_ = os.WriteFile(typo, []byte("heartbeat-timeout: soon\n"), 0o600)
	base := []string{"--node-id", "n1", "--data-dir", dir}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", bad}, nil, `unknown setting "no-such-setting"`},
		{[]string{"--config", typo}, nil, "heartbeat-timeout"},
		{nil, map[string]string{"MEMDBD_ELECTION_TIMEOUT": "x"}, "MEMDBD_ELECTION_TIMEOUT"},
		{[]string{"--election-timeout", "100ms"}, nil, "--election-timeout"},
		{[]string{"--leader-lease-timeout", "2s"}, nil, "--leader-lease-timeout"},
		{[]string{"--initial-cluster", "n1"}, nil, "--initial-cluster"},
		{[]string{"--initial-cluster", "n2=127.0.0.1:1"}, nil, "--initial-cluster"},
		{[]string{"--initial-cluster", "n1=127.0.0.1:7100", "--join", "x:1"}, nil, "exclusive"},
		{[]string{"--max-txn-ops", "0"}, nil, "--max-txn-ops"},
		{[]string{"--max-key-bytes", "1"}, nil, "--max-key-bytes"},
		{[]string{"--heap-floor-bytes", "-1"}, nil, "--heap-floor-bytes"},
		{[]string{"--heap-floor-bytes", "17179869185"}, nil, "--heap-floor-bytes"},
	}
	for _, tc := range cases {
		c, err := parseConfig(append(append([]string{}, base...), tc.args...), env(tc.env), io.Discard)
		if err == nil {
			_, err = c.nodeConfig("test")
		}
		if err == nil {
			_, err = c.serverConfig("test")
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want it to mention %q", tc.args, tc.env, err, tc.want)
		}
	}
}
