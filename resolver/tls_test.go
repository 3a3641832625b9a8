package resolver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writePEM writes PEM blocks of type typ to a new file and returns its path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// countHandshakes counts the TCP connections a server accepts.
func countHandshakes(n *atomic.Int32) func(*httptest.Server) {
	return func(s *httptest.Server) {
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				n.Add(1)
			}
		}
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var conns atomic.Int32
	s := newStubWith(t, true, countHandshakes(&conns))
	_, port, _ := net.SplitHostPort(s.Host)
	caFile := writePEM(t, t.TempDir(), "ca.pem", "CERTIFICATE", s.Certificate().Raw)
	certsDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(certsDir, s.Host), 0o755); err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(certsDir, s.Host), "ca.crt", "CERTIFICATE", s.Certificate().Raw)
	otherCertsDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(otherCertsDir, "127.0.0.1:1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(otherCertsDir, "127.0.0.1:1"), "ca.crt", "CERTIFICATE", s.Certificate().Raw)

	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{name: "system roots do not know the CA", opts: Options{}},
		{name: "--ca-cert", opts: Options{CACerts: []string{caFile}}, ok: true},
		{name: "insecure HOST:PORT", opts: Options{Insecure: []string{s.Host}}, ok: true},
		{name: "insecure HOST", opts: Options{Insecure: []string{"127.0.0.1"}}, ok: true},
		{name: "insecure https://HOST:PORT/", opts: Options{Insecure: []string{"https://" + s.Host + "/"}}, ok: true},
		{name: "insecure CIDR", opts: Options{Insecure: []string{"127.0.0.0/8"}}, ok: true},
		{name: "insecure another port", opts: Options{Insecure: []string{"127.0.0.1:1", "localhost:" + port}}},
		{name: "certs.d/HOST:PORT/ca.crt", opts: Options{CertsDir: certsDir}, ok: true},
		{name: "certs.d of another host", opts: Options{CertsDir: otherCertsDir}},
		{name: "certs.d ignored", opts: Options{CertsDir: "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.CertsDir == "" {
				tc.opts.CertsDir = "-"
			}
			tc.opts.ConfigDir = t.TempDir()
			r, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			before := conns.Load()
			err = pull(ctx, r, s.Host)
			if tc.ok {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") || !strings.Contains(err.Error(), s.Host) {
				t.Fatalf("pull: %v, want an unknown-authority error naming %s", err, s.Host)
			}
			// A certificate that does not verify is not retried.
			if n := conns.Load() - before; n != 1 {
				t.Errorf("%d connections, want 1 (no retries)", n)
			}
		})
	}
}

func TestPlainHTTPLoopback(t *testing.T) {
	t.Parallel()
	// Loopback registries speaking plain HTTP work without any flag, as
	// docker treats them; so does an insecure one.
	s := newStub(t, false)
	for _, insecure := range [][]string{nil, {s.Host}} {
		r, err := New(Options{ConfigDir: t.TempDir(), CertsDir: "-", Insecure: insecure})
		if err != nil {
			t.Fatal(err)
		}
		if err := pull(context.Background(), r, s.Host); err != nil {
			t.Errorf("insecure %v: %v", insecure, err)
		}
	}
}

func TestBadCACert(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not a certificate\n"), 0o600)
	for _, f := range []string{empty, filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := New(Options{CACerts: []string{f}}); !errors.Is(err, ErrCACert) || !strings.Contains(err.Error(), f) {
			t.Errorf("New with --ca-cert %s: %v, want ErrCACert naming the file", f, err)
		}
	}
}

// TestClientCertificate: certs.d/HOST:PORT/NAME.cert and NAME.key are
// presented to a registry that requires a client certificate.
func TestClientCertificate(t *testing.T) {
	t.Parallel()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	var conns atomic.Int32
	s := newStubWith(t, true, func(s *httptest.Server) {
		countHandshakes(&conns)(s)
		s.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	})
	withCert, withoutCert := t.TempDir(), t.TempDir()
	for _, d := range []string{withCert, withoutCert} {
		os.Mkdir(filepath.Join(d, s.Host), 0o755)
		writePEM(t, filepath.Join(d, s.Host), "ca.crt", "CERTIFICATE", s.Certificate().Raw)
	}
	writePEM(t, filepath.Join(withCert, s.Host), "client.cert", "CERTIFICATE", leafDER)
	writePEM(t, filepath.Join(withCert, s.Host), "client.key", "EC PRIVATE KEY", keyDER)

	r, err := New(Options{ConfigDir: t.TempDir(), CertsDir: withCert})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull(context.Background(), r, s.Host); err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	r, err = New(Options{ConfigDir: t.TempDir(), CertsDir: withoutCert})
	if err != nil {
		t.Fatal(err)
	}
	before := conns.Load()
	if err := pull(context.Background(), r, s.Host); err == nil {
		t.Fatal("without a client certificate: no error")
	} else if !strings.Contains(err.Error(), s.Host) {
		t.Errorf("error %q does not name %s", err, s.Host)
	}
	if n := conns.Load() - before; n != 1 {
		t.Errorf("%d connections without a client certificate, want 1 (no retries)", n)
	}
}

// TestInsecureIsPerHost: --insecure-registry A does not make a redirect from
// A to another TLS host unverified.
func TestInsecureIsPerHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := newStub(t, true), newStub(t, true)
	a.redirectBlobs = b.URL
	r, err := New(Options{ConfigDir: t.TempDir(), CertsDir: "-", Insecure: []string{a.Host}})
	if err != nil {
		t.Fatal(err)
	}
	err = pull(ctx, r, a.Host)
	if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") || !strings.Contains(err.Error(), b.Host) {
		t.Fatalf("pull through a redirect to an untrusted host: %v, want an unknown-authority error naming %s", err, b.Host)
	}
	r, err = New(Options{ConfigDir: t.TempDir(), CertsDir: "-", Insecure: []string{a.Host, b.Host}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull(ctx, r, a.Host); err != nil {
		t.Fatalf("with both hosts insecure: %v", err)
	}
}

// TestTokenRealmTLS: the token realm's host gets its own TLS settings
// (--ca-cert, certs.d, --insecure-registry), as docker gives it.
func TestTokenRealmTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTokenServerTLS(t, true)
	ts.user, ts.pass = "alice", "right"
	tsHost := strings.TrimPrefix(ts.URL, "https://")
	s := newStub(t, false)
	s.challenge = `Bearer realm="` + ts.URL + `/token",service="stub"`
	s.auth = func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+ts.token }
	config := writeConfig(t, map[string]any{"auths": map[string]any{s.Host: authEntry("alice", "right")}})
	caFile := writePEM(t, t.TempDir(), "ca.pem", "CERTIFICATE", ts.Certificate().Raw)
	certsDir := t.TempDir()
	os.Mkdir(filepath.Join(certsDir, tsHost), 0o755)
	writePEM(t, filepath.Join(certsDir, tsHost), "ca.crt", "CERTIFICATE", ts.Certificate().Raw)
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{name: "untrusted", opts: Options{}},
		{name: "--ca-cert", opts: Options{CACerts: []string{caFile}}, ok: true},
		{name: "certs.d", opts: Options{CertsDir: certsDir}, ok: true},
		{name: "insecure realm host", opts: Options{Insecure: []string{tsHost}}, ok: true},
		{name: "insecure registry host only", opts: Options{Insecure: []string{s.Host}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.ConfigDir = config
			tc.opts.Retries = ptr(0)
			if tc.opts.CertsDir == "" {
				tc.opts.CertsDir = "-"
			}
			r, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = pull(ctx, r, s.Host)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Host != s.Host || !strings.Contains(err.Error(), "x509") {
				t.Fatalf("pull: %v, want an *AuthError for %s about the realm's certificate", err, s.Host)
			}
		})
	}
}
