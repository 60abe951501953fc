package main

import (
	"io"
	"strings"
	"testing"
)

// --max-response-bytes and --max-response-bytes-in-flight reach the
// server's limits, and values that cannot work are refused naming the
// flag.
func TestResponseLimitFlags(t *testing.T) {
	base := []string{"--node-id", "n1", "--data-dir", t.TempDir()}
	c, err := parseConfig(append(base, "--max-response-bytes", "16777216"),
		env(map[string]string{"MEMDBD_MAX_RESPONSE_BYTES_IN_FLIGHT": "33554432"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.serverConfig("test")
	if err != nil {
		t.Fatal(err)
	}
	if s.Limits.MaxResponseBytes != 16<<20 || s.Limits.MaxResponseBytesInFlight != 32<<20 {
		t.Fatalf("limits %d and %d, want 16 MiB and 32 MiB", s.Limits.MaxResponseBytes, s.Limits.MaxResponseBytesInFlight)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-response-bytes", "8388608"}, "--max-response-bytes:"}, // one row, no room for framing
		{[]string{"--max-response-bytes-in-flight", "1048576"}, "--max-response-bytes-in-flight:"},
	} {
		c, err := parseConfig(append(append([]string{}, base...), tc.args...), env(nil), io.Discard)
		if err == nil {
			_, err = c.serverConfig("test")
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want it to name %q", tc.args, err, tc.want)
		}
	}
}
