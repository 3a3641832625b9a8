package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// dockerConfig writes a docker CLI config.json into a new directory and
// returns the DOCKER_CONFIG= environment entry for it.
func dockerConfig(t *testing.T, cfg map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "config.json"), cfg)
	return "DOCKER_CONFIG=" + dir
}

// login is an "auths" entry as `docker login` writes it.
func login(user, pass string) map[string]any {
	return map[string]any{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
}

// credentialHelper writes docker-credential-e2etest into a new directory and
// returns the PATH= entry that puts it first, and the file where it logs the
// server URL of each `get`. It implements `get` of the docker credential
// helper protocol: the server URL on stdin, JSON credentials on stdout.
func credentialHelper(t *testing.T, creds map[string][2]string) (pathEnv, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls.log")
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n[ \"$1\" = get ] || { echo \"unsupported: $1\" >&2; exit 1; }\nread -r url\necho \"$url\" >> '%s'\ncase \"$url\" in\n", calls)
	for server, c := range creds {
		fmt.Fprintf(&b, "  '%s') printf '%%s\\n' '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' ;;\n", server, server, c[0], c[1])
	}
	b.WriteString("  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n")
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-e2etest"), []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"), calls
}

// checkTarget proves, with an independent client, that every image of f is
// in dst where mapPath says, with its digests.
func checkTarget(t *testing.T, f *fixture, dst *registrytest.Registry, mapPath string) {
	t.Helper()
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	ctx := context.Background()
	c := dst.Client()
	for k, img := range f.images {
		target, ok := mapping[f.refs[k]]
		if !ok {
			t.Errorf("%s is not in the relocation mapping", f.refs[k])
			continue
		}
		named, err := reference.ParseNormalizedNamed(target)
		if err != nil || reference.Domain(named) != dst.Host {
			t.Fatalf("%s relocated to %q, not to %s (%v)", f.refs[k], target, dst.Host, err)
		}
		repo := reference.Path(named)
		if got, err := c.HeadManifest(ctx, repo, img.Root.Digest.String()); err != nil || got.Digest != img.Root.Digest {
			t.Errorf("%s: root in target = %v, %v; want %s", target, got.Digest, err, img.Root.Digest)
		}
		for _, b := range img.Blobs {
			if ok, err := c.BlobExists(ctx, repo, b.Digest); err != nil || !ok {
				t.Errorf("%s: blob %s missing: %v", target, b.Digest, err)
			}
		}
	}
}

// TestAuthTLS relocates between two registries that both speak TLS with
// their own CA and require their own htpasswd login, as users run them.
func TestAuthTLS(t *testing.T) {
	const srcUser, srcPass = "src-user", "src-pass-Q9x"
	const dstUser, dstPass = "dst-user", "dst-pass-W4z"
	src := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{srcUser: srcPass}})
	dst := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{dstUser: dstPass}})
	f := seed(t, src)
	bundleDir := t.TempDir()
	bundlePath := filepath.Join(bundleDir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	cas := []string{"--ca-cert", src.CAFile, "--ca-cert", dst.CAFile}
	// Keys as the docker CLI writes them, in two spellings.
	goodConfig := map[string]any{"auths": map[string]any{
		"https://" + src.Host: login(srcUser, srcPass),
		dst.Host:              login(dstUser, dstPass),
	}}

	// fixup relocates into prefix with env and extra flags; it returns the
	// result and the output directory.
	fixup := func(t *testing.T, prefix string, env []string, flags ...string) (result, string) {
		out := t.TempDir()
		args := append([]string{"fixup", bundlePath, "--repository-prefix", dst.Host + "/" + prefix,
			"--relocation-mapping", filepath.Join(out, "relocation-mapping.json"),
			"--output-bundle", filepath.Join(out, "relocated-bundle.json")}, flags...)
		return cli(t, env, args...), out
	}
	// failsCleanly checks a failed run: exit 1, each wanted text on stderr,
	// no secret, nothing written.
	failsCleanly := func(t *testing.T, r result, out string, want ...string) {
		t.Helper()
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
			}
		}
		for _, secret := range []string{srcPass, dstPass, "wrong-pass"} {
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("output shows a secret")
			}
		}
		if out != "" {
			if got := dirEntries(t, out); len(got) != 0 {
				t.Errorf("output directory holds %v after a failed run", got)
			}
		}
	}

	var mapPath string
	t.Run("config.json", func(t *testing.T) {
		r, out := fixup(t, "team", []string{dockerConfig(t, goodConfig)}, cas...)
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		// Four target repositories on one host, one login.
		checkTarget(t, f, dst, filepath.Join(out, "relocation-mapping.json"))
		// Kept for the subtests below (out goes with this subtest).
		data, err := os.ReadFile(filepath.Join(out, "relocation-mapping.json"))
		if err != nil {
			t.Fatal(err)
		}
		mapPath = filepath.Join(bundleDir, "relocation-mapping.json")
		if err := os.WriteFile(mapPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if mapPath == "" {
		t.FailNow()
	}

	t.Run("export", func(t *testing.T) {
		out := t.TempDir()
		archive := filepath.Join(out, "app.tgz")
		args := append([]string{"export", bundlePath, "--output", archive}, cas...)
		if r := cli(t, []string{dockerConfig(t, goodConfig)}, args...); r.code != 0 {
			t.Errorf("export with the source's login exited %d", r.code)
		}
		// Without the source's login: exit 1 naming the source host, no archive.
		os.Remove(archive)
		onlyDst := map[string]any{"auths": map[string]any{dst.Host: login(dstUser, dstPass)}}
		r := cli(t, []string{dockerConfig(t, onlyDst)}, args...)
		failsCleanly(t, r, out, src.Host)
	})

	t.Run("verify", func(t *testing.T) {
		if r := cli(t, []string{dockerConfig(t, goodConfig)}, append([]string{"verify", bundlePath, "--relocation-mapping", mapPath}, cas...)...); r.code != 0 {
			t.Errorf("verify exited %d", r.code)
		}
		// ~/.docker/config.json when DOCKER_CONFIG is not set; keys with a
		// scheme and a path match as in the docker CLI.
		home := t.TempDir()
		os.MkdirAll(filepath.Join(home, ".docker"), 0o700)
		writeJSON(t, filepath.Join(home, ".docker", "config.json"), map[string]any{"auths": map[string]any{
			"https://" + dst.Host + "/v2/": login(dstUser, dstPass),
		}})
		if r := cli(t, []string{"DOCKER_CONFIG=", "HOME=" + home}, "verify", bundlePath, "--relocation-mapping", mapPath, "--ca-cert", dst.CAFile); r.code != 0 {
			t.Errorf("verify with ~/.docker/config.json exited %d", r.code)
		}
		// --docker-config DIR wins over DOCKER_CONFIG.
		dir := t.TempDir()
		writeJSON(t, filepath.Join(dir, "config.json"), goodConfig)
		if r := cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath, "--ca-cert", dst.CAFile, "--docker-config", dir); r.code != 0 {
			t.Errorf("verify with --docker-config exited %d", r.code)
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		env := []string{dockerConfig(t, map[string]any{"auths": map[string]any{
			src.Host: login(srcUser, srcPass),
			dst.Host: login(dstUser, "wrong-pass"),
		}})}
		r, out := fixup(t, "team", env, cas...)
		failsCleanly(t, r, out, "authentication to "+dst.Host+" failed", dstUser, "config.json")
		r = cli(t, env, append([]string{"verify", bundlePath, "--relocation-mapping", mapPath}, cas...)...)
		failsCleanly(t, r, "", "authentication to "+dst.Host+" failed")
		// The source refusing is reported as the source's host.
		env = []string{dockerConfig(t, map[string]any{"auths": map[string]any{
			src.Host: login(srcUser, "wrong-pass"),
			dst.Host: login(dstUser, dstPass),
		}})}
		r, out = fixup(t, "fresh", env, cas...)
		failsCleanly(t, r, out, "authentication to "+src.Host+" failed", srcUser)
	})

	t.Run("no credentials", func(t *testing.T) {
		env := []string{dockerConfig(t, map[string]any{"auths": map[string]any{src.Host: login(srcUser, srcPass)}})}
		r, out := fixup(t, "team", env, cas...)
		failsCleanly(t, r, out, "authentication to "+dst.Host+" failed", "no credentials for "+dst.Host)
	})

	helperCreds := map[string][2]string{src.Host: {srcUser, srcPass}, dst.Host: {dstUser, dstPass}}
	for _, tc := range []struct {
		name   string
		config map[string]any
	}{
		{"credHelpers", map[string]any{"credHelpers": map[string]any{src.Host: "e2etest", dst.Host: "e2etest"}}},
		{"credsStore", map[string]any{"credsStore": "e2etest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, calls := credentialHelper(t, helperCreds)
			// A new prefix: real pushes, with the helper's credentials.
			r, out := fixup(t, strings.ToLower(tc.name), []string{dockerConfig(t, tc.config), path}, cas...)
			if r.code != 0 {
				t.Fatalf("exit %d", r.code)
			}
			checkTarget(t, f, dst, filepath.Join(out, "relocation-mapping.json"))
			data, _ := os.ReadFile(calls)
			asked := strings.Fields(string(data))
			slices.Sort(asked)
			if want := []string{dst.Host, src.Host}; !slices.Equal(slices.Compact(asked), sortedCopy(want)) {
				t.Errorf("helper was asked for %q, want each of %q", asked, want)
			}
			if r := cli(t, []string{dockerConfig(t, tc.config), path}, "verify", filepath.Join(out, "relocated-bundle.json"), "--ca-cert", dst.CAFile); r.code != 0 {
				t.Errorf("verify exited %d", r.code)
			}
		})
	}

	t.Run("helper missing", func(t *testing.T) {
		env := []string{dockerConfig(t, map[string]any{"credHelpers": map[string]any{dst.Host: "not-installed-e2e"},
			"auths": map[string]any{src.Host: login(srcUser, srcPass)}})}
		r, out := fixup(t, "team", env, cas...)
		failsCleanly(t, r, out, "authentication to "+dst.Host+" failed", "docker-credential-not-installed-e2e")
	})

	t.Run("unknown CA", func(t *testing.T) {
		r, out := fixup(t, "team", []string{dockerConfig(t, goodConfig)}, "--ca-cert", src.CAFile)
		failsCleanly(t, r, out, dst.Host, "certificate signed by unknown authority", "--ca-cert")
		r = cli(t, []string{dockerConfig(t, goodConfig)}, "verify", bundlePath, "--relocation-mapping", mapPath, "--ca-cert", src.CAFile)
		failsCleanly(t, r, "", dst.Host, "--ca-cert")
	})

	t.Run("insecure registry", func(t *testing.T) {
		r, out := fixup(t, "insecure", []string{dockerConfig(t, goodConfig)}, "--ca-cert", src.CAFile, "--insecure-registry", dst.Host)
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		checkTarget(t, f, dst, filepath.Join(out, "relocation-mapping.json"))
		if r := cli(t, []string{dockerConfig(t, goodConfig)}, "verify", filepath.Join(out, "relocated-bundle.json"), "--insecure-registry", dst.Host); r.code != 0 {
			t.Errorf("verify exited %d", r.code)
		}
	})
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// recorder is a plain-HTTP reverse proxy on 127.0.0.1 in front of a
// registry that records the Authorization header of every request. With
// storage set, it answers blob GETs with a 307 to storage, as registries
// backed by object storage do.
type recorder struct {
	*httptest.Server
	Host string

	mu   sync.Mutex
	seen []string // "METHOD PATH AUTHORIZATION"
}

var blobPath = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$`)

func newRecorder(t *testing.T, target *registrytest.Registry, storage string) *recorder {
	t.Helper()
	tu, _ := url.Parse(target.URL)
	rec := &recorder{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(tu) },
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: target.CertPool, MinVersion: tls.VersionTLS12},
		},
		// Upload sessions go on through the proxy.
		ModifyResponse: func(resp *http.Response) error {
			if loc, err := url.Parse(resp.Header.Get("Location")); err == nil && loc.Host == tu.Host {
				loc.Scheme, loc.Host = "http", rec.Host
				resp.Header.Set("Location", loc.String())
			}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		rec.mu.Unlock()
		if m := blobPath.FindStringSubmatch(r.URL.Path); storage != "" && m != nil && r.Method == http.MethodGet {
			http.Redirect(w, r, storage+"/storage/"+m[1]+"@"+m[2], http.StatusTemporaryRedirect)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	rec.Host = strings.TrimPrefix(rec.URL, "http://")
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) requests() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.seen)
}

// TestRedirectCredentials: the source registry redirects blob downloads to
// storage on another port of 127.0.0.1. Net/http would forward the source's
// Authorization header there (it ignores ports); the storage must see no
// credential, the source never the target's, the target never the source's.
func TestRedirectCredentials(t *testing.T) {
	const srcUser, srcPass = "src-user", "src-pass-R7k"
	const dstUser, dstPass = "dst-user", "dst-pass-M2p"
	src := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{srcUser: srcPass}})
	dst := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{dstUser: dstPass}})
	ctx := context.Background()

	// Storage: serves blobs of the source by itself, without credentials,
	// and records what it is sent.
	var mu sync.Mutex
	var storageSeen []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageSeen = append(storageSeen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		name, dgst, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/storage/"), "@")
		if !ok {
			http.NotFound(w, r)
			return
		}
		data, err := src.Client().GetBlob(r.Context(), name, digest.Digest(dgst))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(data)
	}))
	defer storage.Close()
	srcFront := newRecorder(t, src, storage.URL)
	dstFront := newRecorder(t, dst, "")

	c := src.Client()
	specs := []registrytest.ImageSpec{
		{Repo: "vendor/app", Tag: "1.0", Layers: []int{64 << 10, 32 << 10}, Seed: 11},
		{Repo: "vendor/web", Tag: "2.0", Layers: []int{48 << 10}, Seed: 12, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}},
	}
	f := &fixture{src: src, images: map[string]registrytest.Image{}, refs: map[string]string{}}
	images := map[string]any{}
	for i, s := range specs {
		img, err := c.PushImage(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprint("img", i)
		f.images[k], f.refs[k] = img, img.Ref(srcFront.Host)
		images[k] = map[string]any{"image": f.refs[k], "imageType": "oci"}
	}
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"schemaVersion": "v1.0.0", "name": "redirect", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": f.refs["img0"], "imageType": "docker"}}, "images": images})
	out := t.TempDir()
	mapPath := filepath.Join(out, "relocation-mapping.json")
	env := []string{dockerConfig(t, map[string]any{"auths": map[string]any{
		srcFront.Host: login(srcUser, srcPass),
		dstFront.Host: login(dstUser, dstPass),
	}})}
	r := cli(t, env, "fixup", bundlePath, "--repository-prefix", dstFront.Host+"/team", "--relocation-mapping", mapPath)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}

	// The copy is right (the mapping names the proxy; check the registry behind it).
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	for k, v := range mapping {
		mapping[k] = strings.Replace(v, dstFront.Host, dst.Host, 1)
	}
	direct := filepath.Join(t.TempDir(), "direct.json")
	writeJSON(t, direct, mapping)
	checkTarget(t, f, dst, direct)

	srcSecret := "Basic " + base64.StdEncoding.EncodeToString([]byte(srcUser+":"+srcPass))
	dstSecret := "Basic " + base64.StdEncoding.EncodeToString([]byte(dstUser+":"+dstPass))
	mu.Lock()
	defer mu.Unlock()
	if len(storageSeen) == 0 {
		t.Fatal("no blob was downloaded through the redirect")
	}
	for _, q := range storageSeen {
		if !strings.HasSuffix(q, " ") {
			t.Errorf("storage received a credential: %q", q)
		}
	}
	for _, q := range srcFront.requests() {
		if strings.Contains(q, dstSecret) {
			t.Errorf("source received the target's credentials: %q", q)
		}
	}
	for _, q := range dstFront.requests() {
		if strings.Contains(q, srcSecret) {
			t.Errorf("target received the source's credentials: %q", q)
		}
	}
	if !slices.ContainsFunc(srcFront.requests(), func(q string) bool { return strings.HasSuffix(q, srcSecret) }) ||
		!slices.ContainsFunc(dstFront.requests(), func(q string) bool { return strings.HasSuffix(q, dstSecret) }) {
		t.Error("each registry should have received its own credentials")
	}
}

// TestDebugFlag: --debug shows each request to the registries and its
// answer on stderr, for fixup, export and verify, and never a credential.
func TestDebugFlag(t *testing.T) {
	const user, pass = "dbg-user", "dbg-pass-K2v"
	src := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{user: pass}})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	env := []string{dockerConfig(t, map[string]any{"auths": map[string]any{src.Host: login(user, pass)}})}
	ca := []string{"--ca-cert", src.CAFile, "--debug"}
	mapPath := filepath.Join(dir, "m.json")
	for name, args := range map[string][]string{
		"fixup":  append([]string{"fixup", bundlePath, "--repository-prefix", src.Host + "/dbg", "--relocation-mapping", mapPath}, ca...),
		"export": append([]string{"export", bundlePath, "--output", filepath.Join(dir, "a.tgz")}, ca...),
	} {
		t.Run(name, func(t *testing.T) {
			r := cli(t, env, args...)
			if r.code != 0 {
				t.Fatalf("exited %d", r.code)
			}
			for _, want := range []string{"msg=request", "method=HEAD", "method=GET", "status=401", "status=200", "digest=sha256:", "took="} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("--debug does not show %s", want)
				}
			}
			for _, secret := range []string{pass, base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)), "Authorization"} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("--debug shows a secret: %q", secret)
				}
			}
		})
	}
	r := cli(t, env, append([]string{"verify", bundlePath, "--relocation-mapping", mapPath}, ca...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "method=HEAD") || strings.Contains(r.stderr, pass) {
		t.Errorf("verify --debug: exit %d, stderr %q", r.code, r.stderr)
	}
}
