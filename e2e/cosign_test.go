package e2e

import (
	"context"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// cosignBinary is the cosign CLI that scripts/install-deps.sh installs:
// $COSIGN_BIN, else GOPATH's bin.
func cosignBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("COSIGN_BIN")
	if bin == "" {
		bin = filepath.Join(build.Default.GOPATH, "bin", "cosign")
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("no cosign CLI at %s (scripts/install-deps.sh installs it; COSIGN_BIN names another): %v", bin, err)
	}
	return bin
}

// cosignKit runs the real cosign with a key pair of its own, offline: no
// transparency log, a home and TUF root of its own, and every proxy
// variable pointing at a closed loopback port, so that nothing but the
// test's registries on 127.0.0.1 can be reached.
type cosignKit struct {
	t        *testing.T
	bin, dir string
}

func newCosignKit(t *testing.T) cosignKit {
	k := cosignKit{t: t, bin: cosignBinary(t), dir: t.TempDir()}
	if out, err := k.run("generate-key-pair"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	return k
}

func (k cosignKit) run(args ...string) (string, error) {
	cmd := exec.Command(k.bin, args...)
	cmd.Dir = k.dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "HOME="+k.dir, "TUF_ROOT="+filepath.Join(k.dir, "tuf"),
		"HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1", "https_proxy=http://127.0.0.1:1", "http_proxy=http://127.0.0.1:1",
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (k cosignKit) sign(ref string) {
	k.t.Helper()
	if out, err := k.run("sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry", ref); err != nil {
		k.t.Fatalf("cosign sign %s: %v\n%s", ref, err, out)
	}
}

// verify reports whether `cosign verify` accepts ref's signatures, with its output.
func (k cosignKit) verify(ref string) (bool, string) {
	out, err := k.run("verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-http-registry", ref)
	return err == nil, out
}

// TestPlatformCosign: signatures made by the real cosign on the manifest
// of a platform that travels verify with cosign after relocation, kept
// sparse (distribution v3) or rewritten (distribution 2.8). With the index
// kept byte for byte, its own signature verifies too; with it rewritten,
// the new index has no signature (that of the original signs what is gone
// and stays behind), and cosign says so.
func TestPlatformCosign(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	p := pushPlatformImages(t, src)
	k := newCosignKit(t)
	srcRepo := src.Host + "/" + p.index.Repo
	arm := p.index.Manifests[1] // linux/arm64/v8
	k.sign(srcRepo + "@" + p.index.Root.Digest.String())
	k.sign(srcRepo + "@" + arm.Digest.String())
	if ok, out := k.verify(srcRepo + "@" + arm.Digest.String()); !ok {
		t.Fatalf("cosign verify at the source: %s", out)
	}

	t.Run("kept", func(t *testing.T) {
		dst := registrytest.Start(t, registrytest.Options{Impl: registrytest.Distribution3, SparseIndexes: true})
		if r := fixupPlatform(t, p, dst, t.TempDir(), "--platform", "linux/arm64,linux/arm/v7"); r.code != 0 {
			t.Fatalf("exit %d, want 0: %s", r.code, r.stderr)
		}
		repo := dst.Host + "/team/" + p.index.Repo
		if ok, out := k.verify(repo + "@" + arm.Digest.String()); !ok {
			t.Errorf("cosign verify of the kept arm64 manifest in the target failed:\n%s", out)
		}
		if ok, out := k.verify(repo + ":" + p.index.Tag); !ok {
			t.Errorf("cosign verify of the sparse index (kept byte for byte) in the target failed:\n%s", out)
		}
		if ok, _ := k.verify(repo + "@" + p.index.Manifests[0].Digest.String()); ok {
			t.Error("cosign verified the amd64 manifest, which was left at the source")
		}
	})

	t.Run("rewritten", func(t *testing.T) {
		dst := registrytest.Start(t, registrytest.Options{})
		if r := fixupPlatform(t, p, dst, t.TempDir(), "--platform", "linux/arm64,linux/arm/v7", "--platform-index", "rewrite"); r.code != 0 {
			t.Fatalf("exit %d, want 0: %s", r.code, r.stderr)
		}
		repo := dst.Host + "/team/" + p.index.Repo
		if ok, out := k.verify(repo + "@" + arm.Digest.String()); !ok {
			t.Errorf("cosign verify of the kept arm64 manifest in the target failed:\n%s", out)
		}
		got, err := dst.Client().HeadManifest(context.Background(), "team/"+p.index.Repo, p.index.Tag)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest == p.index.Root.Digest {
			t.Fatalf("the index was not rewritten: %s", got.Digest)
		}
		if ok, out := k.verify(repo + ":" + p.index.Tag); ok || !strings.Contains(out, "no signatures found") {
			t.Errorf("cosign verify of the rewritten index: ok %v, want a refusal saying no signatures were found:\n%s", ok, out)
		}
	})
}
