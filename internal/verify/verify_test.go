package verify

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestVerifier(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("cnab-relocate "), 5000) // 70000 bytes
	good := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	flipped := func(i int) []byte {
		b := bytes.Clone(data)
		b[i] ^= 0xff
		return b
	}
	tests := []struct {
		name    string
		content []byte
		desc    ocispec.Descriptor
		wantErr error // nil: the stream passes whole
		// wantMax bounds the bytes handed over before the error.
		wantMax int
	}{
		{"exact", data, good, nil, len(data)},
		{"empty", nil, ocispec.Descriptor{Digest: digest.FromBytes(nil)}, nil, 0},
		{"last byte flipped: the last read is withheld", flipped(len(data) - 1), good, ErrDigestMismatch, len(data) - 1},
		{"first byte flipped", flipped(0), good, ErrDigestMismatch, len(data) - 1},
		{"one byte more", append(bytes.Clone(data), 'x'), good, ErrDigestMismatch, len(data)},
		{"much longer", bytes.Repeat(data, 3), good, ErrDigestMismatch, len(data)},
		{"shorter", data[:len(data)-10], good, ErrDigestMismatch, len(data) - 10},
		{"size smaller than the content", data, ocispec.Descriptor{Digest: good.Digest, Size: 100}, ErrDigestMismatch, 100},
		{"unsupported algorithm", data, ocispec.Descriptor{Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Size: good.Size}, ErrDigestMismatch, 0},
		{"malformed digest", data, ocispec.Descriptor{Digest: "sha256:xyz", Size: good.Size}, ErrDigestMismatch, 0},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"data+EOF": iotest.DataErrReader,
		"half":     iotest.HalfReader,
	}
	for _, tc := range tests {
		for rname, wrap := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				got, err := io.ReadAll(NewReader(wrap(bytes.NewReader(tc.content)), tc.desc))
				if tc.wantErr == nil {
					if err != nil || !bytes.Equal(got, tc.content) {
						t.Fatalf("read %d bytes, err %v; want all %d, no error", len(got), err, len(tc.content))
					}
					return
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if len(got) > tc.wantMax {
					t.Errorf("handed over %d bytes before failing; want at most %d", len(got), tc.wantMax)
				}
				// Whatever was handed over is never a whole body of content
				// that does not match the descriptor.
				if tc.desc.Size > 0 && int64(len(got)) >= tc.desc.Size && digest.FromBytes(got[:tc.desc.Size]) != tc.desc.Digest {
					t.Errorf("handed over %d bytes: a whole body of wrong content", len(got))
				}
			})
		}
	}
}

// TestVerifierPassesReadErrors: a connection error is not a mismatch (the
// engine retries it), and it sticks.
func TestVerifierPassesReadErrors(t *testing.T) {
	t.Parallel()
	data := []byte(strings.Repeat("x", 1000))
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	boom := errors.New("connection reset by peer")
	r := NewReader(io.MultiReader(bytes.NewReader(data[:500]), iotest.ErrReader(boom)), desc)
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) || errors.Is(err, ErrDigestMismatch) || len(got) != 500 {
		t.Fatalf("got %d bytes, %v; want 500 and the read error", len(got), err)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, boom) {
		t.Errorf("second read: %v, want the same error", err)
	}
}
