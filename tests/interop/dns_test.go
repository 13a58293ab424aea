package interop

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// DNSTTL is the TTL of every record, negative answers included.
const DNSTTL = 5

// dnsZone is the zone the server is authoritative for (for the SOA of
// negative answers); names outside it are answered the same way.
const dnsZone = "remote.test."

// SRVTarget is one SRV record's target and port.
type SRVTarget struct {
	Target string // host name, with or without the trailing dot
	Port   uint16
}

// DNSServer is an in-process authoritative DNS server on one 127.0.0.1 port
// (UDP and TCP). Records can be changed while it runs. Unknown names get
// NXDOMAIN, known names without records of the asked type an empty NOERROR;
// both carry an SOA whose minimum TTL is DNSTTL.
type DNSServer struct {
	Addr string // "127.0.0.1:PORT"

	mu      sync.Mutex
	srv     map[string][]SRVTarget
	a       map[string][]net.IP
	failing bool

	queries atomic.Int64
	udp     *dns.Server
	tcp     *dns.Server
}

func startDNSServer() (*DNSServer, error) {
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("dns: listening on TCP: %w", err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			l.Close()
			lastErr = err
			continue
		}
		return newDNSServerOn(l, pc), nil
	}
	return nil, fmt.Errorf("dns: no port free for both UDP and TCP: %w", lastErr)
}

// newDNSServerOn serves on l (TCP) and pc (UDP), the same address.
func newDNSServerOn(l net.Listener, pc net.PacketConn) *DNSServer {
	s := &DNSServer{Addr: l.Addr().String(), srv: map[string][]SRVTarget{}, a: map[string][]net.IP{}}
	s.tcp = &dns.Server{Listener: l, Net: "tcp", Handler: s}
	s.udp = &dns.Server{PacketConn: pc, Net: "udp", Handler: s}
	go s.tcp.ActivateAndServe() //nolint:errcheck // ends with Close
	go s.udp.ActivateAndServe() //nolint:errcheck // ends with Close
	return s
}

// Close stops both listeners.
func (s *DNSServer) Close() error {
	return errors.Join(s.tcp.Shutdown(), s.udp.Shutdown())
}

// SetSRV replaces the SRV records of name (e.g. "_grpc._tcp.c.remote.test").
// With no targets the name stays known but has no SRV records.
func (s *DNSServer) SetSRV(name string, targets ...SRVTarget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[dns.CanonicalName(name)] = append([]SRVTarget(nil), targets...)
}

// SetA replaces the A records of name.
func (s *DNSServer) SetA(name string, ips ...string) {
	parsed := make([]net.IP, 0, len(ips))
	for _, ip := range ips {
		p := net.ParseIP(ip).To4()
		if p == nil {
			panic(fmt.Sprintf("dns: SetA(%q): %q is not an IPv4 address", name, ip))
		}
		parsed = append(parsed, p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[dns.CanonicalName(name)] = parsed
}

// Delete forgets every record of name: it answers NXDOMAIN from now on.
func (s *DNSServer) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.srv, dns.CanonicalName(name))
	delete(s.a, dns.CanonicalName(name))
}

// SetFailing makes every answer SERVFAIL (true) or normal again (false).
func (s *DNSServer) SetFailing(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = failing
}

// Queries is the number of queries answered so far.
func (s *DNSServer) Queries() int64 { return s.queries.Load() }

// ServeDNS answers one query.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.answer(m, req)
	if w.RemoteAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m) // the client retries on loss
}

func (s *DNSServer) answer(m, req *dns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		m.Rcode = dns.RcodeServerFailure
		return
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	srvs, knownSRV := s.srv[name]
	ips, knownA := s.a[name]
	if !knownSRV && !knownA {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa()}
		return
	}
	hdr := func(rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: DNSTTL}
	}
	switch q.Qtype {
	case dns.TypeSRV:
		for _, t := range srvs {
			target := dns.Fqdn(t.Target)
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV), Priority: 0, Weight: 10, Port: t.Port, Target: target})
			for _, ip := range s.a[dns.CanonicalName(target)] {
				m.Extra = append(m.Extra, &dns.A{
					Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: DNSTTL},
					A:   ip,
				})
			}
		}
	case dns.TypeA:
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa()}
	}
}

func (s *DNSServer) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: dnsZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: DNSTTL},
		Ns:      "ns." + dnsZone,
		Mbox:    "hostmaster." + dnsZone,
		Serial:  1,
		Refresh: DNSTTL,
		Retry:   DNSTTL,
		Expire:  DNSTTL,
		Minttl:  DNSTTL,
	}
}

// lookupSRVForTest asks the server for name's SRV records (a self-check).
func (s *DNSServer) lookupSRVForTest(name string) ([]*dns.SRV, error) {
	c := new(dns.Client)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeSRV)
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		return nil, fmt.Errorf("dns: querying %s at %s: %w", name, s.Addr, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("dns: %s answered %s", name, dns.RcodeToString[r.Rcode])
	}
	var out []*dns.SRV
	for _, rr := range r.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			out = append(out, srv)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dns: no SRV records for %s", name)
	}
	return out, nil
}
