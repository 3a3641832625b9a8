package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	remoteserrors "github.com/containerd/containerd/remotes/errors"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// faultStatus answers with an error status, reading the request body first as
// a registry would.
func faultStatus(w http.ResponseWriter, r *http.Request, code int, retryAfter string) bool {
	io.Copy(io.Discard, r.Body)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeRegistryError(w, code, "STUB_FAULT")
	return true
}

// TestRetries proves, request by request, which failures are retried, how
// often, by whom (the transport for replayable requests, the engine whole
// for streaming transfers), and that permanent ones are not.
func TestRetries(t *testing.T) {
	t.Parallel()
	type counts map[string]int // requestKey -> want count; "src:" or "dst:" prefix
	tests := []struct {
		name    string
		retries int
		// transportRetries is the resolver's; 0: same as retries.
		transportRetries int
		src              func(img seededImage) func(w http.ResponseWriter, r *http.Request, key string, n int) bool
		dst              func(img seededImage) func(w http.ResponseWriter, r *http.Request, key string, n int) bool
		wantErr          error // nil: success
		want             func(seededImage) counts
		minWait          time.Duration // a wait at least this long (Retry-After) must be asked for
	}{{
		name: "429 with Retry-After 1 on a blob GET is waited for by the transport",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "GET blob "+img.layers[0].Digest.String() && n == 1 && faultStatus(w, r, 429, "1")
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[0].Digest.String()
			return counts{"src:GET blob " + l: 2, "dst:PUT blob " + l: 1, "dst:POST upload": 3}
		},
		minWait: time.Second,
	}, {
		name: "429 with Retry-After 1 on a blob PUT is waited for and the upload restarts whole",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT blob "+img.layers[0].Digest.String() && n == 1 && faultStatus(w, r, 429, "1")
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[0].Digest.String()
			return counts{"src:GET blob " + l: 2, "dst:PUT blob " + l: 2, "dst:POST upload": 4}
		},
		minWait: time.Second,
	}, {
		name: "503 on a blob PUT restarts the upload",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT blob "+img.layers[1].Digest.String() && n <= 2 && faultStatus(w, r, 503, "")
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[1].Digest.String()
			return counts{"src:GET blob " + l: 3, "dst:PUT blob " + l: 3, "dst:POST upload": 5}
		},
	}, {
		// Without the retrying transport, containerd replays a 429 PUT
		// itself, asking for a new body: a new pipe, which resets the
		// writer (content.ErrReset). That must end in a clean whole retry,
		// not a hang nor a corrupt upload.
		name:             "containerd's own replay of a 429 blob PUT ends in a clean whole retry",
		transportRetries: -1,
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT blob "+img.layers[0].Digest.String() && n == 1 && faultStatus(w, r, 429, "0")
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[0].Digest.String()
			return counts{"src:GET blob " + l: 2, "dst:PUT blob body mismatch": 0}
		},
	}, {
		name:             "containerd's own replay of a 429 manifest PUT ends in a clean whole retry",
		transportRetries: -1,
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT manifest "+img.tag && n == 1 && faultStatus(w, r, 429, "0")
			}
		},
		want: func(img seededImage) counts { return counts{"dst:PUT blob body mismatch": 0} },
	}, {
		name: "BLOB_UPLOAD_UNKNOWN on the PUT restarts the upload",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				if key != "PUT blob "+img.layers[0].Digest.String() || n != 1 {
					return false
				}
				io.Copy(io.Discard, r.Body)
				writeRegistryError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
				return true
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[0].Digest.String()
			return counts{"src:GET blob " + l: 2, "dst:PUT blob " + l: 2, "dst:POST upload": 4}
		},
	}, {
		name: "429 on a manifest PUT is retried whole, no hang",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT manifest "+img.tag && n == 1 && faultStatus(w, r, 429, "0")
			}
		},
		want: func(img seededImage) counts { return counts{"dst:PUT manifest " + img.tag: 2} },
	}, {
		name: "a reset in the middle of a blob GET is retried whole",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			data := layerData(img, 0)
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				if key != "GET blob "+img.layers[0].Digest.String() || n != 1 {
					return false
				}
				faultReset(w, r, 200, data, len(data)/2)
				return true
			}
		},
		want: func(img seededImage) counts {
			return counts{"src:GET blob " + img.layers[0].Digest.String(): 2, "dst:POST upload": 4}
		},
	}, {
		name: "a reset while the target reads a blob PUT restarts the upload",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				if key != "PUT blob "+img.layers[1].Digest.String() || n != 1 {
					return false
				}
				faultReset(w, r, 0, nil, 10<<10)
				return true
			}
		},
		want: func(img seededImage) counts {
			l := img.layers[1].Digest.String()
			return counts{"src:GET blob " + l: 2, "dst:PUT blob " + l: 2, "dst:POST upload": 4}
		},
	}, {
		name:    "500 on every GET of a blob: retries+1 requests in all, then the image fails",
		retries: 2,
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "GET blob "+img.layers[0].Digest.String() && faultStatus(w, r, 500, "")
			}
		},
		wantErr: resolver.ErrRetriesExhausted,
		want: func(img seededImage) counts {
			return counts{"src:GET blob " + img.layers[0].Digest.String(): 3, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name:    "500 on every PUT of a blob: retries+1 uploads in all, then the image fails",
		retries: 2,
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT blob "+img.layers[0].Digest.String() && faultStatus(w, r, 500, "")
			}
		},
		wantErr: ErrTarget,
		want: func(img seededImage) counts {
			return counts{"dst:PUT blob " + img.layers[0].Digest.String(): 3, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name: "404 on a blob GET is not retried",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "GET blob "+img.layers[0].Digest.String() && faultStatus(w, r, 404, "")
			}
		},
		wantErr: errdefs.ErrNotFound,
		want: func(img seededImage) counts {
			return counts{"src:GET blob " + img.layers[0].Digest.String(): 1, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name: "403 on a blob GET is not retried",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "GET blob "+img.layers[0].Digest.String() && faultStatus(w, r, 403, "")
			}
		},
		wantErr: ErrSource,
		want: func(img seededImage) counts {
			return counts{"src:GET blob " + img.layers[0].Digest.String(): 1, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name: "403 on a blob PUT is not retried",
		dst: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return key == "PUT blob "+img.layers[0].Digest.String() && faultStatus(w, r, 403, "")
			}
		},
		wantErr: ErrTarget,
		want: func(img seededImage) counts {
			return counts{"dst:PUT blob " + img.layers[0].Digest.String(): 1, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name: "a blob with one flipped byte fails the image at once; the target never gets a whole body",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			data := layerData(img, 1)
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				if key != "GET blob "+img.layers[1].Digest.String() {
					return false
				}
				bad := append([]byte(nil), data...)
				bad[len(bad)-1] ^= 0xff
				w.Header().Set("Content-Length", fmt.Sprint(len(bad)))
				w.WriteHeader(200)
				w.Write(bad)
				return true
			}
		},
		wantErr: ErrDigestMismatch,
		want: func(img seededImage) counts {
			l := img.layers[1].Digest.String()
			return counts{"src:GET blob " + l: 1, "dst:PUT blob body mismatch": 0, "dst:PUT manifest " + img.tag: 0}
		},
	}, {
		name: "a manifest that is not the one asked for fails the image before any upload",
		src: func(img seededImage) func(http.ResponseWriter, *http.Request, string, int) bool {
			return func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				if key != "GET manifest "+img.root.Digest.String() {
					return false
				}
				// Same length, valid JSON, another digest: one hex digit of
				// the config digest changed.
				old := img.config.Digest.Encoded()
				body := []byte(strings.Replace(string(img.manifest), old, old[:len(old)-1]+string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", old[len(old)-1])+1)%16]), 1))
				w.Header().Set("Content-Type", img.root.MediaType)
				w.Header().Set("Docker-Content-Digest", img.root.Digest.String())
				w.WriteHeader(200)
				w.Write(body)
				return true
			}
		},
		wantErr: ErrDigestMismatch,
		want: func(img seededImage) counts {
			return counts{"src:GET manifest " + img.root.Digest.String(): 1, "dst:POST upload": 0, "dst:PUT manifest " + img.tag: 0}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := newTestRegistry(t), newTestRegistry(t)
			img := src.seedImage(t, "vendor/app", "1.0", 1, 40<<10, 70<<10)
			if tc.src != nil {
				src.setFault(tc.src(img))
			}
			if tc.dst != nil {
				dst.setFault(tc.dst(img))
			}
			tr := tc.transportRetries
			if tr == 0 {
				tr = tc.retries
			}
			clock := retry.NewFakeClock(true)
			res, err := relocateImagesClock(t, clock, src, dst, tc.retries, tr, img)
			t.Logf("waits %v, err: %v", clock.Waits(), err)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Relocate: %v", err)
				}
				repo := targetRepoOf(t, res, img)
				m, ok := dst.manifest(repo, img.tag)
				if !ok || digest.FromBytes(m.data) != img.root.Digest {
					t.Errorf("target %s:%s = %v; want the manifest %s", repo, img.tag, ok, img.root.Digest)
				}
				for _, b := range img.blobs() {
					if !dst.hasBlob(b.Digest) {
						t.Errorf("blob %s missing in the target", b.Digest)
					}
				}
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err = %v; want one matching %v", err, tc.wantErr)
				}
				if err != nil && !strings.Contains(err.Error(), src.Host+"/vendor/app:1.0") {
					t.Errorf("err %q does not name the image", err)
				}
				if got := dst.repos(t); len(got) != 0 {
					t.Errorf("the target holds manifests in %v after a failure; want none", got)
				}
			}
			if longest := slices.Max(append(clock.Waits(), 0)); longest < tc.minWait {
				t.Errorf("the longest wait was %v; want at least %v (Retry-After)", longest, tc.minWait)
			}
			for k, want := range tc.want(img) {
				s := src
				if strings.HasPrefix(k, "dst:") {
					s = dst
				}
				if got := s.count(k[4:]); got != want {
					t.Errorf("%s: %d requests, want %d", k, got, want)
				}
			}
		})
	}
}

// layerData returns the content of img's layer i, as seedImage made it.
func layerData(img seededImage, i int) []byte {
	data := seedLayer(1, i, int(img.layers[i].Size))
	if digest.FromBytes(data) != img.layers[i].Digest {
		panic("layerData out of step with seedImage")
	}
	return data
}

// TestRelocateCancel proves a cancelled run stops promptly even while a
// request hangs, and writes nothing under a tag.
func TestRelocateCancel(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	img := src.seedImage(t, "vendor/app", "1.0", 1, 40<<10)
	src.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		if !strings.HasPrefix(key, "GET blob ") {
			return false
		}
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
		return true
	})
	doc, _ := json.Marshal(map[string]any{"invocationImages": []any{map[string]any{"image": src.Host + "/vendor/app:1.0"}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := relocator.New(relocator.OneToOne, dst.Host+"/team")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	_, err = Relocate(ctx, b, Options{Mapping: m})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Relocate returned %v after the cancel; want promptly", d-500*time.Millisecond)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, ok := dst.manifest("team", img.tag); ok || len(dst.repos(t)) != 0 {
		t.Error("a manifest was pushed")
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", ErrDigestMismatch), false},
		{invalid(errors.New("bad")), false},
		{context.Canceled, false},
		{fmt.Errorf("failed to do request: %w", &resolver.StatusError{StatusCode: 503, Status: "503", Attempts: 5, Exhausted: true}), false},
		{fmt.Errorf("failed to do request: %w", &resolver.StatusError{StatusCode: 429, Status: "429", Attempts: 1}), true},
		{fmt.Errorf("x: %w", errdefs.ErrNotFound), false},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 404, Body: []byte(`{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}`)}, true},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 404, Body: []byte(`{"errors":[{"code":"NAME_UNKNOWN"}]}`)}, false},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 401}, false},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 403}, false},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 400}, false},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 408}, true},
		{remoteserrors.ErrUnexpectedStatus{StatusCode: 502}, true},
		{errors.New("httpReadSeeker: failed open: unexpected status code https://h:1/v2/a/blobs/sha256:00: 403 Forbidden"), false},
		{errors.New("httpReadSeeker: failed open: unexpected status code https://h:1/v2/a/blobs/sha256:00: 504 Gateway Timeout"), true},
		{content.ErrReset, true},
		{io.ErrUnexpectedEOF, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
	}
	for _, tc := range tests {
		// As the engine sees it: containerd's reports typed at the door.
		if got := retry.Retryable(resolver.TypedError(tc.err)); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
