package fixup

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"

	remoteserrors "github.com/containerd/containerd/remotes/errors"

	"github.com/cnabio/cnab-relocate/resolver"
)

// TestRegistryErrorClassifies checks that errors from a registry match the
// sentinel a caller branches on, keep the registry's answer, and name no
// command-line flag.
func TestRegistryErrorClassifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"plain HTTP", errors.New(`Get "https://registry.corp:5000/v2/": http: server gave HTTP response to HTTPS client`), ErrPlainHTTP},
		{"unknown CA", &url.Error{Op: "Get", URL: "https://registry.corp:5000/v2/", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, ErrUnknownAuthority},
		{"login", &resolver.AuthError{Host: "registry.corp:5000", Rejected: true, Err: errors.New("401")}, ErrAuthentication},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := registryError("registry.corp:5000", tc.err)
			var re *RegistryError
			if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) || !errors.As(got, &re) || re.Host != "registry.corp:5000" {
				t.Errorf("registryError = %#v, want a *RegistryError for registry.corp:5000 matching %v and the cause", got, tc.want)
			}
			for _, flag := range []string{"--insecure-registry", "--ca-cert", "docker login", "--docker-config"} {
				if strings.Contains(got.Error(), flag) {
					t.Errorf("library error %q names the CLI's %s", got, flag)
				}
			}
		})
	}
	t.Run("registry answer", func(t *testing.T) {
		err := remoteserrors.ErrUnexpectedStatus{Status: "400 Bad Request", StatusCode: 400,
			Body: []byte(`{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}`)}
		var re *RegistryError
		if !errors.As(registryError("r.example", err), &re) || re.StatusCode != 400 || re.Code != "MANIFEST_BLOB_UNKNOWN" || re.Message != "blob unknown to registry" {
			t.Errorf("RegistryError = %+v, want status 400, code MANIFEST_BLOB_UNKNOWN and its message", re)
		}
		if errors.Is(re, ErrPlainHTTP) || errors.Is(re, ErrAuthentication) || errors.Is(re, ErrUnknownAuthority) {
			t.Errorf("a 400 matches a sentinel it is not: %v", re)
		}
	})
	t.Run("sentinels from fields, not from words", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			err  error
			auth bool
		}{
			{"a 401", &resolver.StatusError{StatusCode: 401, Status: "401 Unauthorized"}, true},
			{"the code UNAUTHORIZED", &resolver.StatusError{StatusCode: 403, Status: "403 Forbidden", Code: "UNAUTHORIZED", Codes: []string{"UNAUTHORIZED"}}, true},
			{"a 403 quota refusal that mentions authorization", &resolver.StatusError{StatusCode: 403, Status: "403 Forbidden", Code: "DENIED", Codes: []string{"DENIED"},
				Message: "quota exceeded; see your authorization plan"}, false},
			{"a plain error with the word in it", errors.New("the authorization service said: 401 Unauthorized"), false},
		} {
			got := registryError("r.example", tc.err)
			if errors.Is(got, ErrAuthentication) != tc.auth {
				t.Errorf("%s: matches ErrAuthentication %v, want %v (%v)", tc.name, !tc.auth, tc.auth, got)
			}
		}
	})
}
