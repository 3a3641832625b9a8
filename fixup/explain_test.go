package fixup

import (
	"errors"
	"strings"
	"testing"

	"github.com/cnabio/cnab-relocate/resolver"
)

func TestExplainSuggestsTheFix(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"plain HTTP", errors.New(`Get "https://registry.corp:5000/v2/": http: server gave HTTP response to HTTPS client`), "--insecure-registry registry.corp:5000"},
		{"unknown CA", errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), "--ca-cert FILE"},
		{"login", &resolver.AuthError{Host: "registry.corp:5000", Rejected: true, Err: errors.New("401")}, "docker login registry.corp:5000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := explain("registry.corp:5000", tc.err)
			if !strings.Contains(got.Error(), tc.want) || !errors.Is(got, tc.err) {
				t.Errorf("explain = %q, want it to wrap the error and suggest %q", got, tc.want)
			}
		})
	}
	if err := errors.New("something else"); explain("h", err) != err {
		t.Error("an error without an obvious fix was changed")
	}
}
