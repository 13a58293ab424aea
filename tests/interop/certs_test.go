package interop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CertPaths holds the PEM files of the test PKI. Every CA is independent
// (self-signed); no certificate carries an IP SAN, so every TLS client has to
// verify a DNS name while it dials 127.0.0.1.
type CertPaths struct {
	// CA certificates.
	CAA, CAB, CAC, CAClient, CAEvil string

	// Client certificate (CN thanos-fanout, ExtKeyUsage ClientAuth) signed by
	// CA-Client: used by thanos-fanout and by the reference querier.
	ClientCert, ClientKey string
	// A client certificate with the same subject signed by CA-Evil, which no
	// server trusts.
	EvilClientCert, EvilClientKey string

	// Server certificates of the topology: sidecars a0/a1 (a.remote.test,
	// CA-A), nginx b (b.remote.test, CA-B), store gateway c (c.remote.test,
	// CA-C).
	ServerACert, ServerAKey string
	ServerBCert, ServerBKey string
	ServerCCert, ServerCKey string
}

// certValidity is how long every certificate is valid.
const certValidity = 24 * time.Hour

// certAuthority is a CA whose key is kept in memory to mint more certificates.
type certAuthority struct {
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// pki mints certificates into dir. Safe for concurrent use.
type pki struct {
	dir string
	cas map[string]*certAuthority

	mu     sync.Mutex
	serial int64
	minted int
}

func newPKI(dir string) (*pki, CertPaths, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, CertPaths{}, fmt.Errorf("creating cert dir: %w", err)
	}
	p := &pki{dir: dir, cas: map[string]*certAuthority{}}
	var paths CertPaths
	caFiles := map[string]*string{
		"A": &paths.CAA, "B": &paths.CAB, "C": &paths.CAC,
		"Client": &paths.CAClient, "Evil": &paths.CAEvil,
	}
	for _, name := range []string{"A", "B", "C", "Client", "Evil"} {
		ca, err := p.newCA(name)
		if err != nil {
			return nil, CertPaths{}, err
		}
		p.cas[name] = ca
		file := filepath.Join(dir, "ca-"+strings.ToLower(name)+".pem")
		if err := writePEM(file, "CERTIFICATE", ca.cert.Raw, 0o644); err != nil {
			return nil, CertPaths{}, err
		}
		*caFiles[name] = file
	}

	var err error
	if paths.ClientCert, paths.ClientKey, err = p.mint("Client", "client", true); err != nil {
		return nil, CertPaths{}, err
	}
	if paths.EvilClientCert, paths.EvilClientKey, err = p.mint("Evil", "client-evil", true); err != nil {
		return nil, CertPaths{}, err
	}
	if paths.ServerACert, paths.ServerAKey, err = p.mint("A", "server-a", false, "a.remote.test"); err != nil {
		return nil, CertPaths{}, err
	}
	if paths.ServerBCert, paths.ServerBKey, err = p.mint("B", "server-b", false, "b.remote.test"); err != nil {
		return nil, CertPaths{}, err
	}
	if paths.ServerCCert, paths.ServerCKey, err = p.mint("C", "server-c", false, "c.remote.test"); err != nil {
		return nil, CertPaths{}, err
	}
	return p, paths, nil
}

func (p *pki) nextSerial() *big.Int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serial++
	return big.NewInt(p.serial)
}

func (p *pki) newCA(name string) (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key of CA %s: %w", name, err)
	}
	now := time.Now().Add(-5 * time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber:          p.nextSerial(),
		Subject:               pkix.Name{CommonName: "thanos-fanout interop CA " + name, Organization: []string{"thanos-fanout interop"}},
		NotBefore:             now,
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA %s: %w", name, err)
	}
	return &certAuthority{name: name, cert: cert, key: key}, nil
}

// mint writes a leaf certificate and its PKCS#8 key signed by CA caName into
// dir/<base>.pem and dir/<base>-key.pem. A client certificate gets CN
// thanos-fanout and ExtKeyUsage ClientAuth; a server certificate gets the DNS
// names as SANs (the first is also its CN) and ExtKeyUsage ServerAuth.
func (p *pki) mint(caName, base string, client bool, dnsNames ...string) (certFile, keyFile string, err error) {
	ca, ok := p.cas[caName]
	if !ok {
		return "", "", fmt.Errorf("unknown CA %q (want A, B, C, Client or Evil)", caName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating key for %s: %w", base, err)
	}
	now := time.Now().Add(-5 * time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber: p.nextSerial(),
		NotBefore:    now,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.Subject = pkix.Name{CommonName: "thanos-fanout"}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		if len(dnsNames) == 0 {
			return "", "", fmt.Errorf("server certificate %s needs at least one DNS name", base)
		}
		tmpl.Subject = pkix.Name{CommonName: dnsNames[0]}
		tmpl.DNSNames = dnsNames
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("signing %s with CA %s: %w", base, caName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encoding key of %s: %w", base, err)
	}
	certFile = filepath.Join(p.dir, base+".pem")
	keyFile = filepath.Join(p.dir, base+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// mintServer mints a server certificate under a fresh file name.
func (p *pki) mintServer(caName string, dnsNames ...string) (certFile, keyFile string, err error) {
	p.mu.Lock()
	p.minted++
	base := fmt.Sprintf("minted-%03d-%s", p.minted, strings.ToLower(caName))
	p.mu.Unlock()
	return p.mint(caName, base, false, dnsNames...)
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
