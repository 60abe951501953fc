// Package ports hands out free TCP addresses for test clusters and
// harnesses. Listening on port 0 and closing can return the same port
// twice in a row; this package never returns a port twice in one process.
package ports

import (
	"fmt"
	"net"
	"sync"
)

var (
	mu   sync.Mutex
	used = map[string]bool{}
)

// Free returns host:port of a TCP port free on ip now and never returned
// before by this process.
func Free(ip string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for tries := 0; tries < 100; tries++ {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		_ = l.Close()
		_, port, _ := net.SplitHostPort(addr)
		if !used[port] {
			used[port] = true
			return addr, nil
		}
	}
	return "", fmt.Errorf("no unused port found on %s", ip)
}
