package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// Artifact types of the referrers in these tests.
const (
	sbomType       = "application/spdx+json"
	attType        = "application/vnd.in-toto+json"
	bundleType     = "application/vnd.dev.sigstore.bundle.v0.3+json"
	emptyType      = "application/vnd.oci.empty.v1+json"
	cosignSigLayer = "application/vnd.dev.cosign.simplesigning.v1+json"
)

// cosignTag is cosign's signature tag for subject.
func cosignTag(subject digest.Digest, suffix string) string {
	return "sha256-" + subject.Encoded() + suffix
}

// events collects the events of a run.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) of(kind EventKind) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// sortedReferrers returns the referrers of the one image of r, by digest.
func sortedReferrers(t *testing.T, r *Result) []ReferrerResult {
	t.Helper()
	if r == nil || len(r.Images) != 1 {
		t.Fatalf("result %+v; want one image", r)
	}
	out := slices.Clone(r.Images[0].Referrers)
	slices.SortFunc(out, func(a, b ReferrerResult) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return out
}

func sortResults(rs ...ReferrerResult) []ReferrerResult {
	slices.SortFunc(rs, func(a, b ReferrerResult) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return rs
}

// refEnv is a source and a target registry for the referrer tests:
// go-containerregistry's in-process registry (with or without the OCI
// referrers API), each behind a counting proxy that the engine talks to
// (the source's injecting faults by rule where a test asks for them).
type refEnv struct {
	srcReg, dstReg *registrytest.Memory
	src, dst       *registrytest.Proxy
}

func newRefEnv(t *testing.T, srcAPI, dstAPI bool, rules ...registrytest.FaultRule) *refEnv {
	t.Helper()
	e := &refEnv{srcReg: registrytest.StartMemory(srcAPI), dstReg: registrytest.StartMemory(dstAPI)}
	e.src = registrytest.NewProxyURL(e.srcReg.URL, nil, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: rules}})
	e.dst = registrytest.NewProxyURL(e.dstReg.URL, nil, registrytest.ProxyOptions{})
	t.Cleanup(func() { e.src.Close(); e.dst.Close(); e.srcReg.Close(); e.dstReg.Close() })
	return e
}

// image pushes a one-layer image to vendor/app:1.0 of the source.
func (e *refEnv) image(t *testing.T) registrytest.Image {
	t.Helper()
	img, err := e.srcReg.Client().PushImage(context.Background(), registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{1 << 10}, OCI: true})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// artifact pushes a referrer to vendor/app of the source.
func (e *refEnv) artifact(t *testing.T, spec registrytest.ArtifactSpec) ocispec.Descriptor {
	t.Helper()
	d, err := e.srcReg.Client().PushArtifact(context.Background(), "vendor/app", spec)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// count returns how many requests p saw that start with prefix ("GET
// /v2/vendor/app/tags/list").
func count(p *registrytest.Proxy, prefix string) int {
	n := 0
	for _, r := range p.Requests() {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// relocate relocates img of the source into the target's team/ with
// referrer options ro, one retry by the engine and one by the transport,
// and returns the target repository.
func (e *refEnv) relocate(t *testing.T, ro ReferrerOptions, img registrytest.Image) (*Result, *events, string, error) {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"name": "refs", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": img.Ref(e.src.Host)}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, e.dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ev := &events{}
	r, err := Relocate(ctx, b, Options{Mapping: m, ClientOptions: ClientOptions{
		ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"},
		Retries:         ptr(1), Jobs: 4, Referrers: ro, OnEvent: ev.add,
	}})
	target, _ := m.Map(mustNamed(img.Ref(e.src.Host)), "")
	return r, ev, reference.Path(target), err
}

// wantManifest checks that the target holds d in repo under ref (a tag
// or digest), byte for byte as the source has it, with its blobs.
func (e *refEnv) wantManifest(t *testing.T, repo, ref string, d ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	want, _, err := e.srcReg.Client().GetManifest(ctx, "vendor/app", d.Digest.String())
	if err != nil {
		t.Fatalf("the source has no %s: %v", d.Digest, err)
	}
	got, _, err := e.dstReg.Client().GetManifest(ctx, repo, ref)
	if err != nil {
		t.Errorf("target %s:%s is missing (%s): %v", repo, ref, d.Digest, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("target %s:%s differs from the source's %s", repo, ref, d.Digest)
	}
	var man ocispec.Manifest
	json.Unmarshal(want, &man)
	for _, b := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if ok, err := e.dstReg.Client().BlobExists(ctx, repo, b.Digest); !ok || err != nil {
			t.Errorf("blob %s of %s missing in the target: %v", b.Digest, d.Digest, err)
		}
	}
}

func (e *refEnv) wantNoManifest(t *testing.T, repo string, d ocispec.Descriptor) {
	t.Helper()
	if _, err := e.dstReg.Client().HeadManifest(context.Background(), repo, d.Digest.String()); err == nil {
		t.Errorf("target %s has %s; want it not copied", repo, d.Digest)
	}
}

// tags returns the target repository's tags, sorted.
func (e *refEnv) tags(t *testing.T, repo string) []string {
	t.Helper()
	tags, err := e.dstReg.Client().Tags(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tags)
	return tags
}

func sortedStrings(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestRelocateReferrersAPI copies a referrer only the referrers API lists
// and a cosign signature only its tag names: the first by digest, the
// second under its tag.
func TestRelocateReferrersAPI(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte(`{"spdxVersion":"SPDX-2.3"}`)})
	sigTag := cosignTag(img.Root.Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte(`{"critical":{}}`)})

	res, ev, repo, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantManifest(t, repo, img.Tag, img.Root)
	e.wantManifest(t, repo, sbom.Digest.String(), sbom)
	e.wantManifest(t, repo, sigTag, sig)
	// The target has no referrers API: the API's referrer is listed in the
	// subject's tag schema index there, so clients can find it.
	indexTag := cosignTag(img.Root.Digest, "")
	if got, want := e.tags(t, repo), sortedStrings(img.Tag, indexTag, sigTag); !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q (the API's referrer by digest, and indexed)", got, want)
	}
	idxData, _, err := e.dstReg.Client().GetManifest(context.Background(), repo, indexTag)
	var gotIdx ocispec.Index
	if err == nil {
		err = json.Unmarshal(idxData, &gotIdx)
	}
	if err != nil || len(gotIdx.Manifests) != 1 || gotIdx.Manifests[0].Digest != sbom.Digest || gotIdx.Manifests[0].ArtifactType != sbomType {
		t.Errorf("referrers index in the target = %s, %v; want it to list the SBOM with its artifact type", idxData, err)
	}
	if n := count(e.dst, "PUT /v2/"+repo+"/manifests/"+sbom.Digest.String()); n != 1 {
		t.Errorf("%d PUTs of the SBOM by digest, want 1", n)
	}

	want := sortResults(
		ReferrerResult{Subject: img.Root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		ReferrerResult{Subject: img.Root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	if n := len(ev.of(ReferrerCopied)); n != 2 {
		t.Errorf("%d ReferrerCopied events, want 2", n)
	}

	// Economy: the tags once per repository; the API once per manifest
	// (the image, then each referrer, for referrers of their own).
	if n := count(e.src, "GET /v2/vendor/app/tags/list"); n != 1 {
		t.Errorf("%d tag list requests, want 1", n)
	}
	for _, d := range []digest.Digest{img.Root.Digest, sbom.Digest, sig.Digest} {
		if n := count(e.src, "GET /v2/vendor/app/referrers/"+d.String()); n != 1 {
			t.Errorf("%d referrers requests for %s, want 1", n, d)
		}
	}

	// A target with the referrers API indexes referrers itself: no tag.
	apiDst := newRefEnv(t, true, true)
	apiDst.srcReg, apiDst.src = e.srcReg, e.src
	_, _, repo2, err := apiDst.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate to a target with the API: %v", err)
	}
	if got, want := apiDst.tags(t, repo2), sortedStrings(img.Tag, sigTag); !slices.Equal(got, want) {
		t.Errorf("target with the API: tags = %q, want %q", got, want)
	}
	if got := referrersOf(t, apiDst.dst.Host, repo2, img.Root); len(got) != 1 || got[0].Digest != sbom.Digest {
		t.Errorf("target with the API lists %v, want the SBOM", got)
	}
}

// TestRelocateReferrersTagSchemaIndexWithAPI proves that where the API
// answers, the referrers tag schema index (left over from before the
// registry had the API) is not copied: the API lists its referrers.
func TestRelocateReferrersTagSchemaIndexWithAPI(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte("sbom")})
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom}})
	indexTag := cosignTag(img.Root.Digest, "")
	if _, err := e.srcReg.Client().PushManifest(context.Background(), "vendor/app", indexTag, ocispec.MediaTypeImageIndex, idx); err != nil {
		t.Fatal(err)
	}

	res, _, repo, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantManifest(t, repo, sbom.Digest.String(), sbom)
	// The target (no API) gets an index of its own, made by relocation.
	if got, want := e.tags(t, repo), sortedStrings(img.Tag, indexTag); !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q", got, want)
	}
	if n := count(e.src, "HEAD /v2/vendor/app/manifests/"+indexTag) + count(e.src, "GET /v2/vendor/app/manifests/"+indexTag); n != 0 {
		t.Errorf("the tag schema index was read %d times; want 0", n)
	}
	want := []ReferrerResult{{Subject: img.Root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType}}
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrersRecursion copies referrers of referrers, through
// the API and through cosign tags, maxReferrerDepth levels deep.
func TestRelocateReferrersRecursion(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	// A chain through the API, one longer than followed.
	var chain []ocispec.Descriptor
	subject := img.Root
	for i := range maxReferrerDepth + 1 {
		d := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: bundleType, Subject: &subject, Payload: []byte("level " + string(rune('0'+i)))})
		chain = append(chain, d)
		subject = d
	}
	// A cosign signature of the first level, found by its tag.
	sigTag := cosignTag(chain[0].Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte("sig of level 0")})

	res, _, repo, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	var want []ReferrerResult
	subj := img.Root.Digest
	for _, d := range chain[:maxReferrerDepth] {
		e.wantManifest(t, repo, d.Digest.String(), d)
		want = append(want, ReferrerResult{Subject: subj, Digest: d.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType})
		subj = d.Digest
	}
	e.wantNoManifest(t, repo, chain[maxReferrerDepth])
	e.wantManifest(t, repo, sigTag, sig)
	want = append(want, ReferrerResult{Subject: chain[0].Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag})
	if diff := cmp.Diff(sortResults(want...), sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	if n := count(e.src, "GET /v2/vendor/app/referrers/"+chain[maxReferrerDepth-1].Digest.String()); n != 0 {
		t.Errorf("the last level followed was asked for referrers %d times; want 0", n)
	}
}

// TestRelocateReferrersTypes keeps only referrers of the given artifact
// types, and does not look for referrers of one left out.
func TestRelocateReferrersTypes(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte("sbom")})
	sbomSig := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: bundleType, Subject: &sbom, Payload: []byte("sig of sbom")})
	att := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: attType, Subject: &img.Root, Payload: []byte("att")})
	attSig := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: bundleType, Subject: &att, Payload: []byte("sig of att")})
	sigTag := cosignTag(img.Root.Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte("cosign sig")})

	res, _, repo, err := e.relocate(t, ReferrerOptions{Types: []string{sbomType, bundleType}}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantManifest(t, repo, sbom.Digest.String(), sbom)
	e.wantManifest(t, repo, sbomSig.Digest.String(), sbomSig)
	for _, d := range []ocispec.Descriptor{att, attSig, sig} {
		e.wantNoManifest(t, repo, d)
	}
	if got, want := e.tags(t, repo), sortedStrings(img.Tag, cosignTag(img.Root.Digest, ""), cosignTag(sbom.Digest, "")); !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q", got, want)
	}
	want := sortResults(
		ReferrerResult{Subject: img.Root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		ReferrerResult{Subject: sbom.Digest, Digest: sbomSig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	for _, d := range []ocispec.Descriptor{att, sig} {
		if n := count(e.src, "GET /v2/vendor/app/referrers/"+d.Digest.String()); n != 0 {
			t.Errorf("referrers of %s, which is left out, were asked for %d times", d.Digest, n)
		}
	}
}

// failManifest is a fault rule: every GET of manifest d in vendor/app of
// the source answers 500.
func failManifest(d ocispec.Descriptor) registrytest.FaultRule {
	return registrytest.FaultRule{
		Match: registrytest.MatchManifestGET("vendor/app", d.Digest.String()),
		Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusInternalServerError},
	}
}

// TestRelocateReferrerFails: a referrer whose manifest cannot be read
// fails its image, or, with BestEffort, is reported and left out.
func TestRelocateReferrerFails(t *testing.T) {
	t.Parallel()
	for _, bestEffort := range []bool{false, true} {
		name := "fails the image"
		if bestEffort {
			name = "best effort"
		}
		t.Run(name, func(t *testing.T) {
			// The referrer's digest is known only once it is pushed:
			// make it first in a throwaway registry.
			probe := newRefEnv(t, true, false)
			bad := probe.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: ptr(probe.image(t).Root), Payload: []byte("unreadable")})
			e := newRefEnv(t, true, false, failManifest(bad))
			img := e.image(t)
			e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte("unreadable")})
			res, ev, repo, err := e.relocate(t, ReferrerOptions{BestEffort: bestEffort}, img)
			t.Logf("err: %v", err)
			ref := img.Ref(e.src.Host)
			if n := count(e.src, "GET /v2/vendor/app/manifests/"+bad.Digest.String()); n < 2 {
				t.Errorf("the referrer's manifest was asked for %d times; want it retried", n)
			}
			if !bestEffort {
				if !errors.Is(err, ErrSource) {
					t.Fatalf("err = %v; want one matching ErrSource", err)
				}
				for _, s := range []string{ref, bad.Digest.String()} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("err %q does not name %s", err, s)
					}
				}
				if n := count(e.dst, "PUT /v2/"+repo+"/manifests/"); n != 0 {
					t.Errorf("%d manifests put into the target; want none", n)
				}
				if f := ev.of(ImageFailed); len(f) != 1 || f[0].Image != ref {
					t.Errorf("ImageFailed events %+v; want one for %s", f, ref)
				}
				if n := len(ev.of(ReferrerFailed)); n != 0 {
					t.Errorf("%d ReferrerFailed events; want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Relocate: %v", err)
			}
			e.wantManifest(t, repo, img.Tag, img.Root)
			e.wantNoManifest(t, repo, bad)
			if got := res.Images[0].Referrers; len(got) != 0 {
				t.Errorf("ImageResult.Referrers = %+v; want none", got)
			}
			f := ev.of(ReferrerFailed)
			if len(f) != 1 || f[0].Image != ref || f[0].Err == nil || !strings.Contains(f[0].Err.Error(), bad.Digest.String()) {
				t.Errorf("ReferrerFailed events %+v; want one for %s naming %s", f, ref, bad.Digest)
			}
			if n := len(ev.of(ImageDone)); n != 1 {
				t.Errorf("%d ImageDone events; want 1", n)
			}
		})
	}
}

// TestRelocateReferrerBestEffortKeepsOthers: with BestEffort, one
// unreadable referrer costs that referrer, not the others of the image.
func TestRelocateReferrerBestEffortKeepsOthers(t *testing.T) {
	t.Parallel()
	probe := newRefEnv(t, true, false)
	badSpec := registrytest.ArtifactSpec{ArtifactType: sbomType, Payload: []byte("unreadable")}
	badSpec.Subject = ptr(probe.image(t).Root)
	bad := probe.artifact(t, badSpec)
	e := newRefEnv(t, true, false, failManifest(bad))
	img := e.image(t)
	e.artifact(t, badSpec)
	good := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: attType, Subject: &img.Root, Payload: []byte("attestation")})
	sigTag := cosignTag(img.Root.Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte("cosign sig")})
	res, ev, repo, err := e.relocate(t, ReferrerOptions{BestEffort: true}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantNoManifest(t, repo, bad)
	e.wantManifest(t, repo, good.Digest.String(), good)
	e.wantManifest(t, repo, sigTag, sig)
	if n := len(ev.of(ReferrerFailed)); n != 1 {
		t.Errorf("%d ReferrerFailed events; want 1", n)
	}
	want := sortResults(
		ReferrerResult{Subject: img.Root.Digest, Digest: good.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: attType},
		ReferrerResult{Subject: img.Root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrerListedAndTagged: a referrer the API lists that is
// also under a cosign tag keeps its tag in the target.
func TestRelocateReferrerListedAndTagged(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	sigTag := cosignTag(img.Root.Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: bundleType, Subject: &img.Root, Tag: sigTag, Payload: []byte("sig with a subject")})
	res, _, repo, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantManifest(t, repo, sigTag, sig)
	want := []ReferrerResult{{Subject: img.Root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType, Tag: sigTag}}
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrersDisabled: with referrers off, not one request looks
// for them.
func TestRelocateReferrersDisabled(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, true, false)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte("sbom")})
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: cosignTag(img.Root.Digest, ".sig"), Payload: []byte("sig")})
	res, ev, repo, err := e.relocate(t, ReferrerOptions{Disabled: true}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	e.wantManifest(t, repo, img.Tag, img.Root)
	for _, kind := range []string{"GET referrers", "GET tags"} {
		if n := e.src.Counts()[kind] + e.dst.Counts()[kind]; n != 0 {
			t.Errorf("%d %q requests; want none", n, kind)
		}
	}
	for _, d := range []ocispec.Descriptor{sbom, sig} {
		e.wantNoManifest(t, repo, d)
		if n := count(e.src, "GET /v2/vendor/app/manifests/"+d.Digest.String()); n != 0 {
			t.Errorf("%s fetched %d times; want none", d.Digest, n)
		}
	}
	if got := res.Images[0].Referrers; len(got) != 0 {
		t.Errorf("ImageResult.Referrers = %+v; want none", got)
	}
	if n := len(ev.of(ReferrerCopied)) + len(ev.of(ReferrerFailed)); n != 0 {
		t.Errorf("%d referrer events; want none", n)
	}
}

// fakeReferrerAPI is a registry with canned answers for registrySource.
type fakeReferrerAPI struct {
	registry  // nil: only Resolve, Tags and Referrers are called
	tags      []string
	tagsErr   error
	refs      []ocispec.Descriptor
	supported bool
	refsErr   error
	resolved  map[string]ocispec.Descriptor // "repo:tag"
	calls     []string
}

func (f *fakeReferrerAPI) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	f.calls = append(f.calls, "resolve "+ref)
	d, ok := f.resolved[ref]
	if !ok {
		return ocispec.Descriptor{}, errors.New("not found: " + ref)
	}
	return d, nil
}

func (f *fakeReferrerAPI) Tags(ctx context.Context, repo string) ([]string, error) {
	f.calls = append(f.calls, "tags "+repo)
	return f.tags, f.tagsErr
}

func (f *fakeReferrerAPI) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, bool, error) {
	f.calls = append(f.calls, "referrers "+repo+"@"+subject.String())
	return f.refs, f.supported, f.refsErr
}

// TestRegistrySourceReferrers: which of the API's answer and the tag
// schema tags registrySource.Referrers returns.
func TestRegistrySourceReferrers(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("image")
	repo := "registry.example.com/team/app"
	img := Image{Ref: repo + ":1.0", Named: mustNamed(repo + ":1.0")}
	apiRef := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType, Digest: digest.FromString("sbom"), Size: 10}
	desc := func(s string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(s), Size: 20}
	}
	index := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("index"), Size: 30}
	base := cosignTag(subject, "")
	resolved := map[string]ocispec.Descriptor{
		repo + ":" + base: index, repo + ":" + base + ".sig": desc("sig"),
		repo + ":" + base + ".att": desc("att"), repo + ":" + base + ".sbom": desc("sbom-tag"),
	}
	allTags := []string{"1.0", "latest", base, base + ".sig", base + ".att", base + ".sbom", cosignTag(digest.FromString("other"), ".sig")}
	tests := []struct {
		name    string
		api     *fakeReferrerAPI
		want    []Referrer
		wantErr string
	}{{
		name: "API supported: its answer and cosign's tags, not the index tag",
		api:  &fakeReferrerAPI{supported: true, refs: []ocispec.Descriptor{apiRef}, tags: allTags},
		want: []Referrer{{Desc: apiRef}, {Desc: desc("sig"), Tag: base + ".sig"}, {Desc: desc("att"), Tag: base + ".att"}, {Desc: desc("sbom-tag"), Tag: base + ".sbom"}},
	}, {
		name: "no API: the index tag and cosign's tags",
		api:  &fakeReferrerAPI{tags: allTags},
		want: []Referrer{{Desc: index, Tag: base}, {Desc: desc("sig"), Tag: base + ".sig"}, {Desc: desc("att"), Tag: base + ".att"}, {Desc: desc("sbom-tag"), Tag: base + ".sbom"}},
	}, {
		name: "only the tags that exist are resolved",
		api:  &fakeReferrerAPI{tags: []string{"1.0", base + ".att"}},
		want: []Referrer{{Desc: desc("att"), Tag: base + ".att"}},
	}, {
		name: "no API and no tags: none",
		api:  &fakeReferrerAPI{},
	}, {
		name:    "an API failure",
		api:     &fakeReferrerAPI{refsErr: errors.New("boom")},
		wantErr: "listing referrers of " + subject.String() + ": boom",
	}, {
		name:    "a tag listing failure",
		api:     &fakeReferrerAPI{tagsErr: errors.New("boom")},
		wantErr: "listing tags: boom",
	}, {
		name:    "a listed tag that does not resolve",
		api:     &fakeReferrerAPI{tags: []string{base + ".sig"}, resolved: map[string]ocispec.Descriptor{}},
		wantErr: "resolving referrer tag " + base + ".sig",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.api.resolved == nil {
				tc.api.resolved = resolved
			}
			got, err := registrySource{reg: tc.api}.Referrers(context.Background(), img, subject)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Referrers (-want +got):\n%s", diff)
			}
			if tc.api.calls[0] != "referrers "+repo+"@"+subject.String() {
				t.Errorf("calls %q; want the API asked for %s in %s first", tc.api.calls, subject, repo)
			}
		})
	}

	t.Run("tags listed once per repository", func(t *testing.T) {
		api := &fakeReferrerAPI{tags: allTags, resolved: resolved}
		src := newRegistrySource(api)
		// The second subject has no tags: nothing to resolve.
		for _, s := range []digest.Digest{subject, digest.FromString("untagged"), subject} {
			if _, err := src.Referrers(context.Background(), img, s); err != nil {
				t.Fatal(err)
			}
		}
		n := 0
		for _, c := range api.calls {
			if strings.HasPrefix(c, "tags ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("tags listed %d times; want 1 (calls %q)", n, api.calls)
		}
	})

	t.Run("a resolver without the API says it cannot search", func(t *testing.T) {
		got, err := registrySource{reg: newRegistry(plainResolver{})}.Referrers(context.Background(), img, subject)
		if got != nil || !errors.Is(err, errNoReferrerListing) {
			t.Errorf("Referrers = %v, %v; want none and errNoReferrerListing", got, err)
		}
	})
}

// plainResolver is a containerd resolver without tag or referrer listing.
type plainResolver struct{ remotes.Resolver }

// TestLayoutSourceReferrers finds, in a thick bundle's layout, the
// referrers export wrote: by their tag schema tag (with or without a
// repository) and by the subject annotation.
func TestLayoutSourceReferrers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := layout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(v any, mediaType string) ocispec.Descriptor {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := store.WriteBlob(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	manifest := func(seed string, subject *ocispec.Descriptor) ocispec.Descriptor {
		cfg := write(map[string]string{"seed": seed}, ocispec.MediaTypeImageConfig)
		return write(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{}, Subject: subject}, ocispec.MediaTypeImageManifest)
	}
	img := manifest("image", nil)
	other := manifest("other image", nil)
	sig := manifest("sig", nil)
	att := manifest("att", nil)
	sbom := manifest("sbom", &img)
	otherSig := manifest("other sig", nil)
	otherSBOM := manifest("other sbom", &other)

	repo := "127.0.0.1:5000/vendor/app"
	store.AddRef(img, repo+":1.0")
	store.AddRef(other, repo+":2.0")
	store.AddRef(sig, repo+":"+cosignTag(img.Digest, ".sig"))
	store.AddRef(att, cosignTag(img.Digest, ".att"))
	a := sbom
	a.Annotations = map[string]string{subjectAnnotation: img.Digest.String()}
	store.AddRef(a, "")
	store.AddRef(otherSig, repo+":"+cosignTag(other.Digest, ".sig"))
	o := otherSBOM
	o.Annotations = map[string]string{subjectAnnotation: other.Digest.String()}
	store.AddRef(o, "")
	// A tag that only ends like one.
	store.AddRef(manifest("lookalike", nil), repo+":x"+cosignTag(img.Digest, ".sig"))
	if err := store.Save(); err != nil {
		t.Fatal(err)
	}
	// As a thick bundle is read: opened again.
	store, err = layout.Open(store.Dir())
	if err != nil {
		t.Fatal(err)
	}

	src := LayoutSource{Store: store, Path: "bundle.tgz"}
	im := Image{Ref: repo + ":1.0", Named: mustNamed(repo + ":1.0")}
	got, err := src.Referrers(ctx, im, img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b Referrer) int { return strings.Compare(a.Tag, b.Tag) })
	want := []Referrer{
		{Desc: sbom},
		{Desc: att, Tag: cosignTag(img.Digest, ".att")},
		{Desc: sig, Tag: cosignTag(img.Digest, ".sig")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Referrers (-want +got):\n%s", diff)
	}

	if got, err := (LayoutSource{}).Referrers(ctx, im, img.Digest); got != nil || err != nil {
		t.Errorf("Referrers without a layout = %v, %v; want none", got, err)
	}
}

// TestReferrersFoundThroughAnIndexAreListed: on a registry without the
// referrers API, an SBOM and a signature listed in the subject's tag
// schema index are reported each as an artifact (digest, artifact type,
// subject), after the index, reported as such.
func TestReferrersFoundThroughAnIndexAreListed(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, false, false)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte("sbom")})
	sig := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: bundleType, Subject: &img.Root, Payload: []byte("sig")})
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom, sig}})
	indexTag := cosignTag(img.Root.Digest, "")
	d, err := e.srcReg.Client().PushManifest(context.Background(), "vendor/app", indexTag, ocispec.MediaTypeImageIndex, idx)
	if err != nil {
		t.Fatal(err)
	}
	res, _, _, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	want := []ReferrerResult{
		{Subject: img.Root.Digest, Digest: d.Digest, MediaType: ocispec.MediaTypeImageIndex, Tag: indexTag, Index: true},
		{Subject: img.Root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		{Subject: img.Root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType},
	}
	if diff := cmp.Diff(want, res.Images[0].Referrers); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// A registry without the referrers API is asked once, not once per image
// planned at the same time: the others wait for the first answer.
func TestReferrersAPIProbedOncePerRegistry(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	var imgs []seededImage
	for i := range 8 {
		imgs = append(imgs, src.seedImage(t, fmt.Sprintf("vendor/app%d", i), "1.0", byte(i), 1<<10))
	}
	if _, err := relocateImagesJobs(t, src, dst, 8, imgs...); err != nil {
		t.Fatal(err)
	}
	asked := src.countWhere(func(key string) bool { return strings.Contains(key, "/referrers/") })
	if asked != 1 {
		t.Errorf("the referrers API was asked %d times, want once (the registry has none)", asked)
	}
}

// flakyTags is a registryAPI whose tag list fails as many times as
// failures says, then answers; each call waits for gate when it is set.
type flakyTags struct {
	mu       sync.Mutex
	calls    int
	failures int
	gate     chan struct{}
}

func (f *flakyTags) Tags(ctx context.Context, repo string) ([]string, error) {
	f.mu.Lock()
	f.calls++
	fail := f.calls <= f.failures
	f.mu.Unlock()
	if f.gate != nil {
		<-f.gate
	}
	if fail {
		return nil, errors.New("503 Service Unavailable")
	}
	return []string{"1.0"}, nil
}

func (f *flakyTags) Referrers(context.Context, string, digest.Digest) ([]ocispec.Descriptor, bool, error) {
	return nil, false, nil
}

// A failed tag list is not kept for the rest of the run: the next asker
// lists again and gets the tags.
func TestTagCacheForgetsAFailure(t *testing.T) {
	t.Parallel()
	api := &flakyTags{failures: 1}
	var c tagCache
	ctx := context.Background()
	if _, err := c.get(ctx, api, "reg.example/app"); err == nil {
		t.Fatal("first list: no error, want the registry's failure")
	}
	tags, err := c.get(ctx, api, "reg.example/app")
	if err != nil || !slices.Equal(tags, []string{"1.0"}) {
		t.Fatalf("second list = %v, %v; want [1.0] (a failure must not be cached)", tags, err)
	}
	if _, err := c.get(ctx, api, "reg.example/app"); err != nil || api.calls != 2 {
		t.Errorf("third list: %v after %d calls; want the kept answer, 2 calls", err, api.calls)
	}
}

// Askers that come while the list is asked for share that one call.
func TestTagCacheSharesOneCall(t *testing.T) {
	t.Parallel()
	api := &flakyTags{gate: make(chan struct{})}
	var c tagCache
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			tags, err := c.get(context.Background(), api, "reg.example/app")
			if err == nil && len(tags) != 1 {
				err = fmt.Errorf("tags %v", tags)
			}
			errs <- err
		})
	}
	// Let every asker arrive, then answer.
	for {
		c.mu.Lock()
		_, asked := c.tags["reg.example/app"]
		c.mu.Unlock()
		if asked {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(api.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if api.calls != 1 {
		t.Errorf("%d tag list calls for 8 concurrent askers, want 1", api.calls)
	}
}

// TestRelocateTagSchemaIntoReferrersAPI: from a registry without the
// referrers API (the SBOM listed by the tag schema index sha256-<hex>, a
// cosign signature under sha256-<hex>.sig) into one with it, the SBOM is
// pushed with its subject, after it, and listed by the target's API; no
// tag schema index is copied (no sha256-<hex> tag), cosign's tag travels,
// and the image's tag is written last. The reverse direction writes the
// index (TestRelocateReferrersAPI).
func TestRelocateTagSchemaIntoReferrersAPI(t *testing.T) {
	t.Parallel()
	e := newRefEnv(t, false, true)
	img := e.image(t)
	sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img.Root, Payload: []byte(`{"spdxVersion":"SPDX-2.3"}`)})
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom}})
	indexTag := cosignTag(img.Root.Digest, "")
	if _, err := e.srcReg.Client().PushManifest(context.Background(), "vendor/app", indexTag, ocispec.MediaTypeImageIndex, idx); err != nil {
		t.Fatal(err)
	}
	sigTag := cosignTag(img.Root.Digest, ".sig")
	sig := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte(`{"critical":{}}`)})

	res, ev, repo, err := e.relocate(t, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	// The target is asked whether it has the API once, for the image.
	if n := count(e.dst, "GET /v2/"+repo+"/referrers/"); n != 1 {
		t.Errorf("the target's referrers API was asked %d times, want 1", n)
	}
	e.wantManifest(t, repo, img.Tag, img.Root)
	e.wantManifest(t, repo, sbom.Digest.String(), sbom)
	e.wantManifest(t, repo, sigTag, sig)
	if got, want := e.tags(t, repo), sortedStrings(img.Tag, sigTag); !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q (no referrers tag schema index where the API is)", got, want)
	}
	if got := referrersOf(t, e.dst.Host, repo, img.Root); len(got) != 1 || got[0].Digest != sbom.Digest {
		t.Errorf("the target's referrers API lists %v, want the SBOM %s", got, sbom.Digest)
	}
	want := sortResults(
		ReferrerResult{Subject: img.Root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		ReferrerResult{Subject: img.Root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	if n := len(ev.of(ReferrerCopied)); n != 2 {
		t.Errorf("%d ReferrerCopied events, want 2 (the SBOM and the signature)", n)
	}

	// The order of the manifest PUTs: the subject by digest before the
	// SBOM, the image's tag last.
	var puts []string
	for _, r := range e.dst.Requests() {
		if p, ok := strings.CutPrefix(r, "PUT /v2/"+repo+"/manifests/"); ok {
			puts = append(puts, p)
		}
	}
	subjectAt, sbomAt := slices.Index(puts, img.Root.Digest.String()), slices.Index(puts, sbom.Digest.String())
	if subjectAt < 0 || sbomAt < 0 || subjectAt > sbomAt {
		t.Errorf("manifest PUTs %q: want the subject %s by digest before the SBOM %s", puts, img.Root.Digest, sbom.Digest)
	}
	if len(puts) == 0 || puts[len(puts)-1] != img.Tag {
		t.Errorf("manifest PUTs %q: want the image's tag %s last", puts, img.Tag)
	}
}

// TestRefreshReferrers: after a relocation, the vendor adds an SBOM of an
// image (through the API, or the tag schema where the source has none)
// and a cosign signature of one of its platform manifests. A rerun finds
// both images present with one request each and copies nothing; a rerun
// with Refresh copies what the target lacks, findable there, listing the
// source's tags once for the two images of the repository.
func TestRefreshReferrers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ srcAPI, dstAPI bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("source API %v, target API %v", c.srcAPI, c.dstAPI), func(t *testing.T) {
			ctx := context.Background()
			e := newRefEnv(t, c.srcAPI, c.dstAPI)
			sc := e.srcReg.Client()
			img1 := e.image(t)
			img2, err := sc.PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "2.0", Layers: []int{1 << 10}, Seed: 2, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
			if err != nil {
				t.Fatal(err)
			}
			sig1Tag := cosignTag(img1.Root.Digest, ".sig")
			sig1 := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sig1Tag, Payload: []byte(`{"critical":{"1":{}}}`)})

			doc, _ := json.Marshal(map[string]any{"name": "refs", "version": "1.0.0",
				"invocationImages": []any{map[string]any{"image": img1.Ref(e.src.Host), "contentDigest": img1.Root.Digest.String()}},
				"images":           map[string]any{"two": map[string]any{"image": img2.Ref(e.src.Host), "contentDigest": img2.Root.Digest.String()}}})
			b, err := Parse(doc)
			if err != nil {
				t.Fatal(err)
			}
			m, err := relocator.New(relocator.OneToOne, e.dst.Host+"/team")
			if err != nil {
				t.Fatal(err)
			}
			target, _ := m.Map(mustNamed(img1.Ref(e.src.Host)), "")
			repo := reference.Path(target)
			run := func(refresh bool) (*Result, *events) {
				t.Helper()
				e.src.Reset()
				e.dst.Reset()
				ev := &events{}
				r, err := Relocate(ctx, b, Options{Mapping: m, ClientOptions: ClientOptions{
					ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"},
					Retries:         ptr(1), Jobs: 4, Referrers: ReferrerOptions{Refresh: refresh}, OnEvent: ev.add,
				}})
				if err != nil {
					t.Fatalf("Relocate (refresh %v): %v", refresh, err)
				}
				return r, ev
			}
			run(false)
			e.wantManifest(t, repo, sig1Tag, sig1)

			// The vendor signs and attaches later.
			sbom := e.artifact(t, registrytest.ArtifactSpec{ArtifactType: sbomType, Subject: &img2.Root, Payload: []byte(`{"spdxVersion":"SPDX-2.3","name":"two"}`)})
			if !c.srcAPI {
				idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom}})
				if _, err := sc.PushManifest(ctx, "vendor/app", cosignTag(img2.Root.Digest, ""), ocispec.MediaTypeImageIndex, idx); err != nil {
					t.Fatal(err)
				}
			}
			child := img2.Manifests[1]
			sig2Tag := cosignTag(child.Digest, ".sig")
			sig2 := e.artifact(t, registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sig2Tag, Payload: []byte(`{"critical":{"2":{}}}`)})

			// The default: one request per image (the bundle records the
			// digests), nothing new copied.
			res, _ := run(false)
			for _, i := range res.Images {
				if !i.Present || len(i.Referrers) != 0 {
					t.Errorf("rerun: %s present %v, referrers %v; want present, none copied", i.Source, i.Present, i.Referrers)
				}
			}
			if got := len(e.dst.Requests()) + len(e.src.Requests()); got != 2 {
				t.Errorf("rerun: %d requests (target %q, source %q), want 2: one per image", got, e.dst.Requests(), e.src.Requests())
			}
			e.wantNoManifest(t, repo, sbom)
			e.wantNoManifest(t, repo, sig2)

			// With Refresh: the new referrers travel, the old one is not
			// pushed again.
			res, ev := run(true)
			if n := count(e.src, "GET /v2/vendor/app/tags/list"); n != 1 {
				t.Errorf("refresh: %d tag lists of the source repository for its 2 images, want 1", n)
			}
			if n := count(e.dst, "PUT /v2/"+repo+"/manifests/"+sig1Tag); n != 0 {
				t.Errorf("refresh: the signature already in place was pushed %d times", n)
			}
			if n := count(e.dst, "PUT /v2/"+repo+"/manifests/"+img1.Tag) + count(e.dst, "PUT /v2/"+repo+"/manifests/"+img2.Tag); n != 0 {
				t.Errorf("refresh: the images' tags were pushed %d times, want 0 (they are in place)", n)
			}
			var got []digest.Digest
			for _, i := range res.Images {
				if !i.Present {
					t.Errorf("refresh: %s not reported present", i.Source)
				}
				for _, r := range i.Referrers {
					if !r.Index {
						got = append(got, r.Digest)
					}
				}
			}
			slices.Sort(got)
			if want := sortedDigests(sbom.Digest, sig2.Digest); !slices.Equal(got, want) {
				t.Errorf("refresh: referrers copied %v, want %v", got, want)
			}
			if n := len(ev.of(ImagePresent)); n != 1 {
				t.Errorf("refresh: %d ImagePresent events, want 1 (the image with nothing new)", n)
			}
			e.wantManifest(t, repo, sbom.Digest.String(), sbom)
			e.wantManifest(t, repo, sig2Tag, sig2)
			indexTag := cosignTag(img2.Root.Digest, "")
			tags := e.tags(t, repo)
			if c.dstAPI {
				if got := referrersOf(t, e.dst.Host, repo, img2.Root); len(got) != 1 || got[0].Digest != sbom.Digest {
					t.Errorf("the target's referrers API lists %v, want the SBOM", got)
				}
				if slices.Contains(tags, indexTag) {
					t.Errorf("target with the API has the tag schema index %s", indexTag)
				}
			} else {
				data, _, err := e.dstReg.Client().GetManifest(ctx, repo, indexTag)
				var idx ocispec.Index
				if err == nil {
					err = json.Unmarshal(data, &idx)
				}
				if err != nil || !slices.ContainsFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == sbom.Digest }) {
					t.Errorf("the target's tag schema index %s = %s, %v; want it to list the SBOM", indexTag, data, err)
				}
			}

			// Once everything is there, a refresh copies nothing.
			res, _ = run(true)
			for _, i := range res.Images {
				if len(i.Referrers) != 0 {
					t.Errorf("second refresh: %s copied %v again", i.Source, i.Referrers)
				}
			}
			if n := count(e.dst, "PUT "); n != 0 {
				t.Errorf("second refresh: %d PUTs to the target, want 0", n)
			}
		})
	}
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}
