package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	remoteserrors "github.com/containerd/containerd/remotes/errors"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/resolver"
)

// TestStatusErrorAtTheSource: a registry's refusal is one *StatusError
// where the resolver reads it (its host, status, codes, message, whether
// it is temporary), made by its own requests and by its transport alike.
func TestStatusErrorAtTheSource(t *testing.T) {
	t.Parallel()
	reg := registrytest.Start(t, registrytest.Options{})
	ctx := retry.WithClock(context.Background(), retry.NewFakeClock(true))
	img, data, desc := seedManifest(t, ctx, reg, 5)
	one := 1
	manifests := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }
	for _, tc := range []struct {
		name      string
		match     func(*http.Request) bool // nil: manifests
		fault     registrytest.Fault
		call      func(r *resolver.Resolver, host string) error
		status    int
		codes     []string
		temporary bool
		exhausted bool
		text      string // in Error()
	}{{
		name:  "a refused manifest PUT, read by PushManifest",
		fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusBadRequest, Code: "MANIFEST_INVALID", Message: "cannot overwrite tag"},
		call: func(r *resolver.Resolver, host string) error {
			return r.PushManifest(ctx, host+"/team/a", "2", desc.MediaType, data)
		},
		status: 400, codes: []string{"MANIFEST_INVALID"},
		text: "PUT http://", // the request, its status and the registry's reason
	}, {
		name:  "a 503 on a manifest PUT, which the transport cannot replay",
		fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusServiceUnavailable},
		call: func(r *resolver.Resolver, host string) error {
			return r.PushManifest(ctx, host+"/team/a", "2", desc.MediaType, data)
		},
		status: 503, codes: []string{"UNAVAILABLE"}, temporary: true,
		text: "503 Service Unavailable: UNAVAILABLE",
	}, {
		name:  "a 503 on every manifest GET, after the transport's retries",
		fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusServiceUnavailable},
		call: func(r *resolver.Resolver, host string) error {
			_, _, err := r.Manifest(ctx, host+"/team/a", img.Root.Digest.String())
			return err
		},
		status: 503, codes: []string{"UNAVAILABLE"}, exhausted: true,
		text: "(after 2 attempts)",
	}, {
		name:  "a 500 whose code says why",
		fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusInternalServerError, Code: "DENIED", Message: "quota"},
		call: func(r *resolver.Resolver, host string) error {
			return r.PushManifest(ctx, host+"/team/a", "2", desc.MediaType, data)
		},
		status: 500, codes: []string{"DENIED"},
		text: "500 Internal Server Error: DENIED: quota",
	}, {
		name:  "a refused tag list, read by Tags",
		match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/tags/list") },
		fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusForbidden, Code: "DENIED", Message: "no listing"},
		call: func(r *resolver.Resolver, host string) error {
			_, err := r.Tags(ctx, host+"/team/a")
			return err
		},
		status: 403, codes: []string{"DENIED"},
		text: "/v2/team/a/tags/list: 403 Forbidden: DENIED: no listing",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			match := tc.match
			if match == nil {
				match = manifests
			}
			p := registrytest.NewProxy(reg, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{{Match: match, Fault: tc.fault}}}})
			defer p.Close()
			r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-", Retries: &one})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(r, p.Host)
			var se *resolver.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v (%T), want a *resolver.StatusError", err, err)
			}
			if se.Host != p.Host || se.StatusCode != tc.status || !slices.Equal(se.Codes, tc.codes) {
				t.Errorf("StatusError host %q status %d codes %v, want %q %d %v", se.Host, se.StatusCode, se.Codes, p.Host, tc.status, tc.codes)
			}
			if se.Temporary() != tc.temporary || errors.Is(err, resolver.ErrRetriesExhausted) != tc.exhausted {
				t.Errorf("Temporary %v, exhausted %v; want %v, %v", se.Temporary(), errors.Is(err, resolver.ErrRetriesExhausted), tc.temporary, tc.exhausted)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err %q does not say %q", err, tc.text)
			}
		})
	}
}

// TestTypedError: containerd's reports of a registry's answer become a
// *StatusError that wraps them and says what they say, at the door.
func TestTypedError(t *testing.T) {
	t.Parallel()
	us := remoteserrors.ErrUnexpectedStatus{Status: "404 Not Found", StatusCode: 404, RequestMethod: "PUT",
		RequestURL: "http://r.example:5000/v2/team/a/blobs/uploads/abc?_state=LONG&digest=sha256%3A00",
		Body:       []byte(`{"errors":[{"code":"UNKNOWN"},{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}`)}
	fetch := errors.New("httpReadSeeker: failed open: unexpected status code https://r.example:5000/v2/team/a/blobs/sha256:00: 403 Forbidden - Server message: denied: no")
	for _, tc := range []struct {
		name      string
		err       error
		status    int
		codes     []string
		text      string
		temporary bool
	}{
		{"a bare ErrUnexpectedStatus says the request, without its state", us, 404, []string{"UNKNOWN", "BLOB_UPLOAD_UNKNOWN"},
			"PUT http://r.example:5000/v2/team/a/blobs/uploads/abc: 404 Not Found: BLOB_UPLOAD_UNKNOWN: blob upload unknown to registry", true},
		{"a wrapped one keeps its text", fmt.Errorf("pushing: %w", us), 404, []string{"UNKNOWN", "BLOB_UPLOAD_UNKNOWN"},
			"pushing: unexpected status from PUT request to", true},
		{"the fetcher's text", fetch, 403, nil, fetch.Error(), false},
		{"the fetcher's text, a 504", errors.New("unexpected status code https://r.example:5000/v2/x/blobs/sha256:00: 504 Gateway Timeout"), 504, nil, "504 Gateway Timeout", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := resolver.TypedError(tc.err)
			var se *resolver.StatusError
			if !errors.As(err, &se) || se.Err == nil || se.Err.Error() != tc.err.Error() {
				t.Fatalf("TypedError = %#v, want a *StatusError wrapping the cause", err)
			}
			if se.Host != "r.example:5000" || se.StatusCode != tc.status || !slices.Equal(se.Codes, tc.codes) || se.Temporary() != tc.temporary {
				t.Errorf("host %q status %d codes %v temporary %v; want r.example:5000 %d %v %v", se.Host, se.StatusCode, se.Codes, se.Temporary(), tc.status, tc.codes, tc.temporary)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Error() = %q, want it to say %q", err, tc.text)
			}
			if again := resolver.TypedError(err); again != err {
				t.Errorf("a typed error is typed again: %v", again)
			}
		})
	}
	plain := errors.New("x")
	if resolver.TypedError(nil) != nil || resolver.TypedError(plain) != plain {
		t.Error("TypedError changes nil or an error without an answer")
	}
}
