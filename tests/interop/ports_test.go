package interop

import (
	"net"
	"strconv"
	"testing"
)

// The topology's ports are handed to processes that bind them later; a port
// from the kernel's ephemeral range could meanwhile become the source port
// of some outgoing connection, so every port handed out must lie below it,
// be distinct, and be free when handed out.
func TestPortsAreTakenBelowTheEphemeralRange(t *testing.T) {
	ports := newPortSet()
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 300 {
		addr := ports.addr()
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
		if port < firstListenPort || port >= low {
			t.Fatalf("port %d outside %d-%d: the kernel may give it to an outgoing connection", port, firstListenPort, low-1)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %d handed out but not free: %v", port, err)
		}
		l.Close()
	}
}
