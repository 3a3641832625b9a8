package fixup

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cnabio/cnab-go/bundle"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/relocator"
)

// testdataDir is the repository's testdata/ (real-bundles, cnab-spec), found
// from this package's directory.
func testdataDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join("..", "testdata")
	if st, err := os.Stat(filepath.Join(d, "real-bundles")); err != nil || !st.IsDir() {
		t.Fatalf("testdata/real-bundles not found in the repository (%s): %v", d, err)
	}
	return d
}

func TestLoadRealBundles(t *testing.T) {
	t.Parallel()
	dir := testdataDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "real-bundles", "*.json"))
	examples, _ := filepath.Glob(filepath.Join(dir, "cnab-spec", "examples", "*-bundle.json"))
	files = append(files, examples...)
	if len(files) < 10 {
		t.Fatalf("found %d bundles, want the real-bundles and spec examples", len(files))
	}
	// Bundles whose relocatable images have no valid reference must be refused,
	// naming the image; every other bundle loads.
	wantErr := map[string]string{
		"porter--pkg_cnab_testdata_bundle-depsv2.json": `images.image2 has no "image"`,
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := LoadFile(f)
			if want, ok := wantErr[filepath.Base(f)]; ok {
				if err == nil || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), f) {
					t.Fatalf("LoadFile = %v, want an input error naming %s and %s", err, f, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			if len(b.Images) == 0 {
				t.Fatal("no images")
			}
			// A rewrite with an empty mapping keeps the whole document.
			out, err := b.Rewrite(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var a, c any
			orig, _ := os.ReadFile(f)
			json.Unmarshal(orig, &a)
			json.Unmarshal(out, &c)
			if !reflect.DeepEqual(a, c) {
				t.Errorf("rewrite without mapping changed the document")
			}
		})
	}
}

func TestRewriteKeepsEverythingElse(t *testing.T) {
	t.Parallel()
	in := `{"name":"x","version":"1.0.0","schemaVersion":"v1.0.0",
	"x-unknown-top":{"z":1,"a":[1.50,2e3,"<&>"]},
	"invocationImages":[{"image":"example.com/inv:1","imageType":"docker","custom-key":true}],
	"images":{"web":{"image":"example.com/web@sha256:` + strings.Repeat("a", 64) + `","description":"d","labels":{"b":"2","a":"1"}},
	          "vm":{"image":"some-vm-image","imageType":"vm"}},
	"custom":{"io.example":{"k":"v"}},"parameters":null,"credentials":null}`
	b, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	dInv := digest.FromString("inv")
	mapping := map[string]string{
		"example.com/inv:1": "r.example/p/inv-h:1",
		"example.com/web@sha256:" + strings.Repeat("a", 64): "r.example/p/web-h@sha256:" + strings.Repeat("a", 64),
	}
	out, err := b.Rewrite(mapping, map[string]digest.Digest{"example.com/inv:1": dInv})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"credentials":null,"custom":{"io.example":{"k":"v"}},"images":{"vm":{"image":"some-vm-image","imageType":"vm"},"web":{"description":"d","image":"r.example/p/web-h@sha256:` + strings.Repeat("a", 64) + `","labels":{"a":"1","b":"2"}}},"invocationImages":[{"contentDigest":"` + dInv.String() + `","custom-key":true,"image":"r.example/p/inv-h:1","imageType":"docker"}],"name":"x","parameters":null,"schemaVersion":"v1.0.0","version":"1.0.0","x-unknown-top":{"a":[1.50,2e3,"<&>"],"z":1}}`
	if string(out) != want {
		t.Errorf("Rewrite =\n%s\nwant\n%s", out, want)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"malformed", `{"name": "x",`, "malformed JSON at line 1"},
		{"empty", ``, "empty file"},
		{"array", `[]`, "not a bundle object"},
		{"null", `null`, "null"},
		{"no invocation image", `{"name":"x"}`, "no invocation image"},
		{"empty invocation images", `{"invocationImages":[]}`, "no invocation image"},
		{"invocation images not array", `{"invocationImages":{}}`, `"invocationImages" is a object, want array`},
		{"bad reference", `{"invocationImages":[{"image":"Not A Ref!"}]}`, `"Not A Ref!" (invocationImages[0]): not a valid image reference`},
		{"missing image", `{"invocationImages":[{"imageType":"docker"}]}`, `invocationImages[0] has no "image"`},
		{"image not string", `{"invocationImages":[{"image":5}]}`, `invocationImages[0].image is a number`},
		{"no image in images", `{"invocationImages":[{"image":"a/b:1"}],"images":{"x":{"imageType":"oci"}}}`, `images.x has no "image"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an input error containing %q", err, tc.want)
			}
		})
	}
}

// Digests are checked when a plan is made: the bundle loads, relocation refuses.
func TestPlanDigestErrors(t *testing.T) {
	t.Parallel()
	m, err := relocator.New(relocator.OneToOne, "r.example/p")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unsupported digest algorithm", `{"invocationImages":[{"image":"a/b:1","contentDigest":"md5:d41d8cd98f00b204e9800998ecf8427e"}]}`, `a/b:1 (invocationImages[0]): contentDigest "md5:d41d8cd98f00b204e9800998ecf8427e"`},
		{"placeholder digest", `{"invocationImages":[{"image":"a/b:1","contentDigest":"sha256:aaaa..."}]}`, `contentDigest "sha256:aaaa..."`},
		{"digest disagrees with reference", `{"invocationImages":[{"image":"a/b@sha256:` + strings.Repeat("a", 64) + `","contentDigest":"sha256:` + strings.Repeat("b", 64) + `"}]}`, "differs from the digest in the reference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, err = NewPlan(b, m)
			if err == nil || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPlan = %v, want an input error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseTrailing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"trailing data", `{"invocationImages":[{"image":"a/b:1"}]} {}`, "unexpected data after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an input error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseLeavesOtherTypesAlone(t *testing.T) {
	t.Parallel()
	b, err := Parse([]byte(`{"invocationImages":[{"image":"a/b:1"}],"images":{"c":{"image":"c","imageType":"c"},"n":{"imageType":"vm"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range b.Images {
		got = append(got, i.Field+"="+map[bool]string{true: "relocate", false: "leave"}[i.Relocatable()])
	}
	want := []string{"invocationImages[0]=relocate", "images.c=leave", "images.n=leave"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"invocationImages":[{"image":"a/b:1","contentDigest":"sha256:` + strings.Repeat("a", 64) + `"}],"images":{"x":{"image":"nginx"}}}`))
	f.Add([]byte(`{"invocationImages":null,"images":null}`))
	f.Add([]byte(`{"invocationImages":[{"image":"localhost:5000/x@sha256:` + strings.Repeat("0", 64) + `","imageType":"oci"}],"x":[1,2,{"y":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("error %v is not an input error", err)
			}
			return
		}
		out, err := b.Rewrite(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := Parse(out)
		if err != nil {
			t.Fatalf("canonical output does not parse: %v\n%s", err, out)
		}
		out2, _ := b2.Rewrite(nil, nil)
		if !bytes.Equal(out, out2) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", out, out2)
		}
	})
}

func TestFromCNAB(t *testing.T) {
	t.Parallel()
	cb := &bundle.Bundle{
		SchemaVersion: "v1.0.0", Name: "app", Version: "1.0.0",
		InvocationImages: []bundle.InvocationImage{{BaseImage: bundle.BaseImage{ImageType: "docker", Image: "vendor/app:1"}}},
		Images:           map[string]bundle.Image{"db": {BaseImage: bundle.BaseImage{Image: "vendor/db:2", Digest: "sha256:" + strings.Repeat("1", 64)}}},
	}
	b, err := FromCNAB(cb)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, i := range b.Images {
		refs = append(refs, i.Field+"="+i.Ref+"@"+i.ContentDigest)
	}
	want := []string{"invocationImages[0]=vendor/app:1@", "images.db=vendor/db:2@sha256:" + strings.Repeat("1", 64)}
	if !reflect.DeepEqual(refs, want) {
		t.Errorf("got %v, want %v", refs, want)
	}
}
