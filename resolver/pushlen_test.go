package resolver

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPushBlobLength: the upload PUT says its length, also for a blob of
// no bytes (net/http would otherwise send that one chunked, which
// registries behind some proxies refuse).
func TestPushBlobLength(t *testing.T) {
	t.Parallel()
	for _, data := range [][]byte{nil, []byte("four")} {
		var got []string
		s := newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodPost:
				w.Header().Set("Location", "/v2/team/a/blobs/uploads/1?_state=x")
				w.WriteHeader(http.StatusAccepted)
			case http.MethodPut:
				b, _ := io.ReadAll(r.Body)
				got = append(got, r.URL.Query().Get("_state"), r.URL.Query().Get("digest"), string(b))
				if len(r.TransferEncoding) > 0 || r.ContentLength != int64(len(data)) {
					t.Errorf("PUT of %d bytes: Content-Length %d, Transfer-Encoding %v", len(data), r.ContentLength, r.TransferEncoding)
				}
				w.WriteHeader(http.StatusCreated)
			}
		})
		r := apiResolver(t, "")
		desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
		how, err := r.PushBlob(context.Background(), s.Host+"/team/a", desc, "", func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
		if err != nil || how != BlobUploaded {
			t.Fatalf("PushBlob of %d bytes = %v, %v; want BlobUploaded", len(data), how, err)
		}
		if want := []string{"x", desc.Digest.String(), string(data)}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("PUT got %q; want %q (the session's state kept, the digest added)", got, want)
		}
	}
}
