package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// closedLoopbackPort returns 127.0.0.1:PORT where nothing listens (it did a moment
// ago).
func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestBadInput runs the CLI on a corpus of bad input. Each case must end
// with one error line that names the input and the problem, the documented
// exit code (2 for bad usage or input, 1 for a failed relocation), no panic,
// no output and no temporary file, and the input untouched.
func TestBadInput(t *testing.T) {
	// One small image in a real registry, for the cases that need a
	// reachable source.
	src := registrytest.Start(t, registrytest.Options{})
	if _, err := src.Client().PushImage(context.Background(), registrytest.ImageSpec{Repo: "ok/app", Tag: "1", Layers: []int{1024}, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	okRef := src.Host + "/ok/app:1"
	okBundle := `{"name":"ok","version":"1.0.0","invocationImages":[{"image":"` + okRef + `","imageType":"docker"}]}`
	down := closedLoopbackPort(t)
	downTarget := closedLoopbackPort(t)

	tests := []struct {
		name   string
		bundle string // content of bundle.json; "" for none
		// args after "fixup"; BUNDLE, DIR and MAP are replaced by the bundle
		// path, the directory and DIR/map.json.
		args []string
		code int
		want []string // substrings of the error line
	}{{
		name:   "malformed JSON",
		bundle: "{\"name\": \"x\",\n \"invocationImages\": [\n",
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "malformed JSON", "line 3"},
	}, {
		name:   "malformed JSON: a syntax error",
		bundle: "{\"name\": \"x\", \"invocationImages\": [}]}",
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "malformed JSON", "line 1, column"},
	}, {
		name:   "not a bundle object",
		bundle: `["not", "a", "bundle"]`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "not a bundle object"},
	}, {
		name: "missing bundle file",
		args: []string{"DIR/nowhere.json", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code: 2,
		want: []string{"DIR/nowhere.json", "no such file"},
	}, {
		name:   "no invocation image",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[],"images":{"a":{"image":"` + okRef + `"}}}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "no invocation image"},
	}, {
		name:   "invocationImages missing",
		bundle: `{"name":"x","version":"1.0.0"}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "no invocation image"},
	}, {
		name:   "unparsable image reference",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[{"image":"` + okRef + `"}],"images":{"web":{"image":"Registry.Example/UPPER case:1"}}}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", `"Registry.Example/UPPER case:1"`, "images.web", "not a valid image reference"},
	}, {
		name:   "image without a reference",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[{"imageType":"docker"}]}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", "invocationImages[0]", `no "image" reference`},
	}, {
		name:   "unsupported digest algorithm in contentDigest",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[{"image":"` + okRef + `","contentDigest":"md5:d41d8cd98f00b204e9800998ecf8427e"}]}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{okRef, "md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm"},
	}, {
		name:   "unsupported digest algorithm in the reference",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[{"image":"` + src.Host + `/ok/app@md5:d41d8cd98f00b204e9800998ecf8427e"}]}`,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{"BUNDLE", src.Host + "/ok/app@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm"},
	}, {
		name:   "unreachable source registry",
		bundle: `{"name":"x","version":"1.0.0","invocationImages":[{"image":"` + down + `/app:1"}]}`,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "MAP"},
		code:   1,
		want:   []string{down + "/app:1", "source registry " + down, "connection refused"},
	}, {
		name:   "unreachable target registry",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", downTarget + "/team", "--relocation-mapping", "MAP"},
		code:   1,
		want:   []string{okRef, "target registry " + downTarget, "connection refused"},
	}, {
		name:   "prefix that is not a repository",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", "not a repo!", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{`"not a repo!"`, "not a valid reference"},
	}, {
		name:   "prefix with a tag",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team:v1", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{`"127.0.0.1:1/team:v1"`, "must not have a tag"},
	}, {
		name:   "prefix ending with a slash",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", "127.0.0.1:1/team/", "--relocation-mapping", "MAP"},
		code:   2,
		want:   []string{`"127.0.0.1:1/team/"`, "slash"},
	}, {
		name:   "output in a missing directory",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "DIR/missing/map.json"},
		code:   2,
		want:   []string{"DIR/missing/map.json", "no such file or directory"},
	}, {
		name:   "output bundle in a missing directory",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "MAP", "--output-bundle", "DIR/missing/out.json"},
		code:   2,
		want:   []string{"DIR/missing/out.json", "no such file or directory"},
	}, {
		name:   "relocation mapping is the input",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "BUNDLE"},
		code:   2,
		want:   []string{"BUNDLE", "is also the input"},
	}, {
		name:   "output bundle is the input, spelled differently",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "MAP", "--output-bundle", "DIR/./bundle.json"},
		code:   2,
		want:   []string{"DIR/./bundle.json", "is also the input"},
	}, {
		name:   "output is a directory",
		bundle: okBundle,
		args:   []string{"BUNDLE", "--repository-prefix", src.Host + "/team", "--relocation-mapping", "DIR"},
		code:   2,
		want:   []string{"DIR", "is a directory"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bundlePath := filepath.Join(dir, "bundle.json")
			expand := func(s string) string {
				s = strings.ReplaceAll(s, "BUNDLE", bundlePath)
				s = strings.ReplaceAll(s, "MAP", filepath.Join(dir, "map.json"))
				return strings.ReplaceAll(s, "DIR", dir)
			}
			if tc.bundle != "" {
				if err := os.WriteFile(bundlePath, []byte(tc.bundle), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := dirEntries(t, dir)
			args := []string{"fixup"}
			for _, a := range tc.args {
				args = append(args, expand(a))
			}
			start := time.Now()
			r := cli(t, nil, args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d", r.code, tc.code)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
				t.Fatalf("panic:\n%s", r.stderr)
			}
			var errLines []string
			for _, l := range strings.Split(r.stderr, "\n") {
				if strings.HasPrefix(l, "cnab-relocate fixup: ") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 {
				t.Fatalf("%d error lines, want 1:\n%s", len(errLines), r.stderr)
			}
			for _, w := range tc.want {
				if w := expand(w); !strings.Contains(errLines[0], w) {
					t.Errorf("error %q does not say %q", errLines[0], w)
				}
			}
			if got := dirEntries(t, dir); !slices.Equal(got, before) {
				t.Errorf("directory holds %v after the run, held %v", got, before)
			}
			if tc.bundle != "" {
				if data, _ := os.ReadFile(bundlePath); string(data) != tc.bundle {
					t.Errorf("the input bundle was changed")
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout: %q; want nothing", r.stdout)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
