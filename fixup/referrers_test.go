package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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

// referrerStub is a regStub that also has the OCI 1.1 referrers API
// (GET /v2/<repo>/referrers/<digest>, listing what seedArtifact stored with
// a subject, in the order stored) and tag listing (GET /v2/<repo>/tags/list,
// one page). extra, when set, sees every request first, as regStub.fault.
type referrerStub struct {
	*regStub

	mu        sync.Mutex
	referrers map[string][]ocispec.Descriptor // "repo@subject"
	extra     func(w http.ResponseWriter, r *http.Request, key string, n int) bool
}

var (
	referrersPath = regexp.MustCompile(`^/v2/(.+)/referrers/([a-z0-9]+:[a-f0-9]+)$`)
	tagsListPath  = regexp.MustCompile(`^/v2/(.+)/tags/list$`)
)

func newReferrerStub(t *testing.T) *referrerStub {
	t.Helper()
	s := &referrerStub{regStub: newRegStub(t), referrers: map[string][]ocispec.Descriptor{}}
	s.setFault(s.serveAPI)
	return s
}

// setExtra installs f in front of the referrers and tags API.
func (s *referrerStub) setExtra(f func(w http.ResponseWriter, r *http.Request, key string, n int) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = f
}

func (s *referrerStub) serveAPI(w http.ResponseWriter, r *http.Request, key string, n int) bool {
	s.mu.Lock()
	extra := s.extra
	s.mu.Unlock()
	if extra != nil && extra(w, r, key, n) {
		return true
	}
	if r.Method != http.MethodGet {
		return false
	}
	if m := referrersPath.FindStringSubmatch(r.URL.Path); m != nil {
		s.mu.Lock()
		descs := slices.Clone(s.referrers[m[1]+"@"+m[2]])
		s.mu.Unlock()
		if descs == nil {
			descs = []ocispec.Descriptor{}
		}
		data, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs})
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Write(data)
		return true
	}
	if m := tagsListPath.FindStringSubmatch(r.URL.Path); m != nil {
		data, _ := json.Marshal(map[string]any{"name": m[1], "tags": stubTags(s.regStub, m[1])})
		w.Header().Set("Content-Type", "application/json")
		w.Write(data)
		return true
	}
	return false
}

// stubTags returns the tags of repo in s, sorted.
func stubTags(s *regStub, repo string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tags := []string{}
	for k := range s.manifests {
		if ref, ok := strings.CutPrefix(k, repo+":"); ok && !strings.Contains(ref, ":") {
			tags = append(tags, ref)
		}
	}
	slices.Sort(tags)
	return tags
}

// stubRequests returns how many requests whose key contains substr s
// received.
func stubRequests(s *regStub, substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.counts {
		if strings.Contains(k, substr) {
			n += c
		}
	}
	return n
}

// artifact is a referrer manifest to seed.
type artifact struct {
	// artifactType is the manifest's artifactType ("" for none).
	artifactType string
	// configType is its config's media type; default the OCI empty type.
	configType string
	// subject, when set, is the manifest it refers to: the referrers API
	// lists it.
	subject *ocispec.Descriptor
	// tag, when set, is the tag it is stored under.
	tag     string
	payload string
}

// seedArtifact stores a as an OCI manifest with one layer in repo and
// returns its descriptor (with its artifact type as the referrers API
// reports it).
func (s *referrerStub) seedArtifact(repo string, a artifact) ocispec.Descriptor {
	put := func(mediaType string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		s.regStub.mu.Lock()
		s.blobs[d.Digest] = data
		s.regStub.mu.Unlock()
		return d
	}
	configType := a.configType
	config := []byte("{}")
	if configType == "" {
		configType = emptyType
	} else {
		config = []byte(`{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}`)
	}
	layerType := a.artifactType
	if layerType == "" {
		layerType = cosignSigLayer
	}
	data, _ := json.Marshal(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: a.artifactType,
		Config:       put(configType, config),
		Layers:       []ocispec.Descriptor{put(layerType, []byte(a.payload))},
		Subject:      a.subject,
	})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data)), ArtifactType: a.artifactType}
	if d.ArtifactType == "" {
		d.ArtifactType = configType
	}
	m := stubManifest{mediaType: ocispec.MediaTypeImageManifest, data: data}
	s.regStub.mu.Lock()
	s.manifests[repo+":"+d.Digest.String()] = m
	if a.tag != "" {
		s.manifests[repo+":"+a.tag] = m
	}
	s.regStub.mu.Unlock()
	if a.subject != nil {
		s.mu.Lock()
		k := repo + "@" + a.subject.Digest.String()
		s.referrers[k] = append(s.referrers[k], d)
		s.mu.Unlock()
	}
	return d
}

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

// relocateReferrers relocates img of src into dst/team with referrer
// options ro, one retry by the engine and one by the transport.
func relocateReferrers(t *testing.T, src *referrerStub, dst *regStub, ro ReferrerOptions, img stubImage) (*Result, *events, error) {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"name": "stub", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": src.Host + "/" + img.repo + ":" + img.tag}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	tracker := docker.NewInMemoryTracker()
	res, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-", Tracker: tracker, Retries: ptr(1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ev := &events{}
	r, err := Relocate(ctx, b, Options{Mapping: m, ClientOptions: ClientOptions{Resolver: res, Retries: ptr(1), Jobs: 4, Referrers: ro, OnEvent: ev.add}})
	return r, ev, err
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

// wantManifest checks that dst holds d in repo under ref (a tag or
// digest), byte for byte as src has it.
func wantManifest(t *testing.T, src *referrerStub, dst *regStub, srcRepo, repo, ref string, d ocispec.Descriptor) {
	t.Helper()
	want, ok := src.manifest(srcRepo, d.Digest.String())
	if !ok {
		t.Fatalf("the source has no %s", d.Digest)
	}
	got, ok := dst.manifest(repo, ref)
	if !ok {
		t.Errorf("target %s:%s is missing (%s)", repo, ref, d.Digest)
		return
	}
	if !bytes.Equal(got.data, want.data) {
		t.Errorf("target %s:%s differs from the source's %s", repo, ref, d.Digest)
	}
	var man ocispec.Manifest
	json.Unmarshal(want.data, &man)
	for _, b := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if !dst.hasBlob(b.Digest) {
			t.Errorf("blob %s of %s missing in the target", b.Digest, d.Digest)
		}
	}
}

func wantNoManifest(t *testing.T, dst *regStub, repo string, d ocispec.Descriptor) {
	t.Helper()
	if _, ok := dst.manifest(repo, d.Digest.String()); ok {
		t.Errorf("target %s has %s; want it not copied", repo, d.Digest)
	}
}

// TestRelocateReferrersAPI copies a referrer only the referrers API lists
// and a cosign signature only its tag names: the first by digest, the
// second under its tag.
func TestRelocateReferrersAPI(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 4<<10)
	sbom := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: `{"spdxVersion":"SPDX-2.3"}`})
	sigTag := cosignTag(img.root.Digest, ".sig")
	sig := src.seedArtifact("vendor/app", artifact{configType: ocispec.MediaTypeImageConfig, tag: sigTag, payload: `{"critical":{}}`})

	res, ev, err := relocateReferrers(t, src, dst, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantManifest(t, src, dst, "vendor/app", repo, img.tag, img.root)
	wantManifest(t, src, dst, "vendor/app", repo, sbom.Digest.String(), sbom)
	wantManifest(t, src, dst, "vendor/app", repo, sigTag, sig)
	// The target has no referrers API: the API's referrer is listed in the
	// subject's tag schema index there, so clients can find it.
	indexTag := cosignTag(img.root.Digest, "")
	if got, want := stubTags(dst, repo), []string{img.tag, indexTag, sigTag}; !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q (the API's referrer by digest, and indexed)", got, want)
	}
	dst.mu.Lock()
	idxData := dst.manifests[repo+":"+indexTag].data
	dst.mu.Unlock()
	var gotIdx ocispec.Index
	if err := json.Unmarshal(idxData, &gotIdx); err != nil || len(gotIdx.Manifests) != 1 || gotIdx.Manifests[0].Digest != sbom.Digest || gotIdx.Manifests[0].ArtifactType != sbomType {
		t.Errorf("referrers index in the target = %s, %v; want it to list the SBOM with its artifact type", idxData, err)
	}

	if n := dst.count("PUT manifest " + sbom.Digest.String()); n != 1 {
		t.Errorf("%d PUTs of the SBOM by digest, want 1", n)
	}

	want := sortResults(
		ReferrerResult{Subject: img.root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		ReferrerResult{Subject: img.root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	if n := len(ev.of(ReferrerCopied)); n != 2 {
		t.Errorf("%d ReferrerCopied events, want 2", n)
	}

	// Economy: the tags once per repository; the API once per manifest
	// (the image, then each referrer, for referrers of their own).
	if n := src.count("GET /v2/vendor/app/tags/list"); n != 1 {
		t.Errorf("%d tag list requests, want 1", n)
	}
	for _, d := range []digest.Digest{img.root.Digest, sbom.Digest, sig.Digest} {
		if n := src.count("GET /v2/vendor/app/referrers/" + d.String()); n != 1 {
			t.Errorf("%d referrers requests for %s, want 1", n, d)
		}
	}

	// A target with the referrers API indexes referrers itself: no tag.
	apiDst := newReferrerStub(t)
	res2, _, err := relocateReferrers(t, src, apiDst.regStub, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate to a target with the API: %v", err)
	}
	repo2 := stubTargetRepo(t, res2, img)
	if got, want := stubTags(apiDst.regStub, repo2), []string{img.tag, sigTag}; !slices.Equal(got, want) {
		t.Errorf("target with the API: tags = %q, want %q", got, want)
	}
}

// TestRelocateReferrersTagSchemaIndexWithAPI proves that where the API
// answers, the referrers tag schema index (left over from before the
// registry had the API) is not copied: the API lists its referrers.
func TestRelocateReferrersTagSchemaIndexWithAPI(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	sbom := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: "sbom"})
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom}})
	indexTag := cosignTag(img.root.Digest, "")
	src.regStub.mu.Lock()
	src.manifests["vendor/app:"+indexTag] = stubManifest{mediaType: ocispec.MediaTypeImageIndex, data: idx}
	src.manifests["vendor/app:"+digest.FromBytes(idx).String()] = stubManifest{mediaType: ocispec.MediaTypeImageIndex, data: idx}
	src.regStub.mu.Unlock()

	res, _, err := relocateReferrers(t, src, dst, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantManifest(t, src, dst, "vendor/app", repo, sbom.Digest.String(), sbom)
	// The target (no API) gets an index of its own, made by relocation.
	if got, want := stubTags(dst, repo), []string{img.tag, indexTag}; !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q", got, want)
	}
	if n := src.count("HEAD manifest " + indexTag); n != 0 {
		t.Errorf("the tag schema index was resolved %d times; want 0", n)
	}
	want := []ReferrerResult{{Subject: img.root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType}}
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrersRecursion copies referrers of referrers, through
// the API and through cosign tags, maxReferrerDepth levels deep.
func TestRelocateReferrersRecursion(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	// A chain through the API, one longer than followed.
	var chain []ocispec.Descriptor
	subject := img.root
	for i := range maxReferrerDepth + 1 {
		d := src.seedArtifact("vendor/app", artifact{artifactType: bundleType, subject: &subject, payload: "level " + string(rune('0'+i))})
		chain = append(chain, d)
		subject = d
	}
	// A cosign signature of the first level, found by its tag.
	sigTag := cosignTag(chain[0].Digest, ".sig")
	sig := src.seedArtifact("vendor/app", artifact{configType: ocispec.MediaTypeImageConfig, tag: sigTag, payload: "sig of level 0"})

	res, _, err := relocateReferrers(t, src, dst, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	var want []ReferrerResult
	subj := img.root.Digest
	for _, d := range chain[:maxReferrerDepth] {
		wantManifest(t, src, dst, "vendor/app", repo, d.Digest.String(), d)
		want = append(want, ReferrerResult{Subject: subj, Digest: d.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType})
		subj = d.Digest
	}
	wantNoManifest(t, dst, repo, chain[maxReferrerDepth])
	wantManifest(t, src, dst, "vendor/app", repo, sigTag, sig)
	want = append(want, ReferrerResult{Subject: chain[0].Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag})
	if diff := cmp.Diff(sortResults(want...), sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	if n := src.count("GET /v2/vendor/app/referrers/" + chain[maxReferrerDepth-1].Digest.String()); n != 0 {
		t.Errorf("the last level followed was asked for referrers %d times; want 0", n)
	}
}

// TestRelocateReferrersTypes keeps only referrers of the given artifact
// types, and does not look for referrers of one left out.
func TestRelocateReferrersTypes(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	sbom := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: "sbom"})
	sbomSig := src.seedArtifact("vendor/app", artifact{artifactType: bundleType, subject: &sbom, payload: "sig of sbom"})
	att := src.seedArtifact("vendor/app", artifact{artifactType: attType, subject: &img.root, payload: "att"})
	attSig := src.seedArtifact("vendor/app", artifact{artifactType: bundleType, subject: &att, payload: "sig of att"})
	sigTag := cosignTag(img.root.Digest, ".sig")
	sig := src.seedArtifact("vendor/app", artifact{configType: ocispec.MediaTypeImageConfig, tag: sigTag, payload: "cosign sig"})

	res, _, err := relocateReferrers(t, src, dst, ReferrerOptions{Types: []string{sbomType, bundleType}}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantManifest(t, src, dst, "vendor/app", repo, sbom.Digest.String(), sbom)
	wantManifest(t, src, dst, "vendor/app", repo, sbomSig.Digest.String(), sbomSig)
	for _, d := range []ocispec.Descriptor{att, attSig, sig} {
		wantNoManifest(t, dst, repo, d)
	}
	wantTags := []string{img.tag, cosignTag(img.root.Digest, ""), cosignTag(sbom.Digest, "")}
	slices.Sort(wantTags)
	if got, want := stubTags(dst, repo), wantTags; !slices.Equal(got, want) {
		t.Errorf("target tags = %q, want %q", got, want)
	}
	want := sortResults(
		ReferrerResult{Subject: img.root.Digest, Digest: sbom.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sbomType},
		ReferrerResult{Subject: sbom.Digest, Digest: sbomSig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
	for _, d := range []ocispec.Descriptor{att, sig} {
		if n := src.count("GET /v2/vendor/app/referrers/" + d.Digest.String()); n != 0 {
			t.Errorf("referrers of %s, which is left out, were asked for %d times", d.Digest, n)
		}
	}
}

// TestRelocateReferrerFails: a referrer whose manifest cannot be read
// fails its image, or, with BestEffort, is reported and left out.
func TestRelocateReferrerFails(t *testing.T) {
	for _, bestEffort := range []bool{false, true} {
		name := "fails the image"
		if bestEffort {
			name = "best effort"
		}
		t.Run(name, func(t *testing.T) {
			src, dst := newReferrerStub(t), newRegStub(t)
			img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
			bad := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: "unreadable"})
			src.setExtra(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
				return strings.HasSuffix(key, " manifest "+bad.Digest.String()) && faultStatus(w, r, http.StatusInternalServerError, "")
			})
			res, ev, err := relocateReferrers(t, src, dst, ReferrerOptions{BestEffort: bestEffort}, img)
			t.Logf("err: %v", err)
			ref := src.Host + "/vendor/app:1.0"
			if n := src.count("GET manifest " + bad.Digest.String()); n < 2 {
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
				if dst.manifestCount() != 0 {
					t.Errorf("the target holds %d manifests; want none", dst.manifestCount())
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
			repo := stubTargetRepo(t, res, img)
			wantManifest(t, src, dst, "vendor/app", repo, img.tag, img.root)
			wantNoManifest(t, dst, repo, bad)
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
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	bad := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: "unreadable"})
	good := src.seedArtifact("vendor/app", artifact{artifactType: attType, subject: &img.root, payload: "attestation"})
	sigTag := cosignTag(img.root.Digest, ".sig")
	sig := src.seedArtifact("vendor/app", artifact{configType: ocispec.MediaTypeImageConfig, tag: sigTag, payload: "cosign sig"})
	src.setExtra(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		return strings.HasSuffix(key, " manifest "+bad.Digest.String()) && faultStatus(w, r, http.StatusInternalServerError, "")
	})
	res, ev, err := relocateReferrers(t, src, dst, ReferrerOptions{BestEffort: true}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantNoManifest(t, dst, repo, bad)
	wantManifest(t, src, dst, "vendor/app", repo, good.Digest.String(), good)
	wantManifest(t, src, dst, "vendor/app", repo, sigTag, sig)
	if n := len(ev.of(ReferrerFailed)); n != 1 {
		t.Errorf("%d ReferrerFailed events; want 1", n)
	}
	want := sortResults(
		ReferrerResult{Subject: img.root.Digest, Digest: good.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: attType},
		ReferrerResult{Subject: img.root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ocispec.MediaTypeImageConfig, Tag: sigTag},
	)
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrerListedAndTagged: a referrer the API lists that is
// also under a cosign tag keeps its tag in the target.
func TestRelocateReferrerListedAndTagged(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	sigTag := cosignTag(img.root.Digest, ".sig")
	sig := src.seedArtifact("vendor/app", artifact{artifactType: bundleType, subject: &img.root, tag: sigTag, payload: "sig with a subject"})
	res, _, err := relocateReferrers(t, src, dst, ReferrerOptions{}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantManifest(t, src, dst, "vendor/app", repo, sigTag, sig)
	want := []ReferrerResult{{Subject: img.root.Digest, Digest: sig.Digest, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundleType, Tag: sigTag}}
	if diff := cmp.Diff(want, sortedReferrers(t, res)); diff != "" {
		t.Errorf("ImageResult.Referrers (-want +got):\n%s", diff)
	}
}

// TestRelocateReferrersDisabled: with referrers off, not one request looks
// for them.
func TestRelocateReferrersDisabled(t *testing.T) {
	src, dst := newReferrerStub(t), newRegStub(t)
	img := src.seedImage("vendor/app", "1.0", 1, 1<<10)
	sbom := src.seedArtifact("vendor/app", artifact{artifactType: sbomType, subject: &img.root, payload: "sbom"})
	sig := src.seedArtifact("vendor/app", artifact{configType: ocispec.MediaTypeImageConfig, tag: cosignTag(img.root.Digest, ".sig"), payload: "sig"})
	res, ev, err := relocateReferrers(t, src, dst, ReferrerOptions{Disabled: true}, img)
	if err != nil {
		t.Fatalf("Relocate: %v", err)
	}
	repo := stubTargetRepo(t, res, img)
	wantManifest(t, src, dst, "vendor/app", repo, img.tag, img.root)
	for _, s := range []string{"/referrers/", "/tags/list"} {
		if n := stubRequests(src.regStub, s); n != 0 {
			t.Errorf("%d %s requests to the source; want none", n, s)
		}
		if n := stubRequests(dst, s); n != 0 {
			t.Errorf("%d %s requests to the target; want none", n, s)
		}
	}
	for _, d := range []ocispec.Descriptor{sbom, sig} {
		wantNoManifest(t, dst, repo, d)
		if n := src.count("GET manifest " + d.Digest.String()); n != 0 {
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

// fakeReferrerAPI is a resolver with canned answers for RegistrySource.
type fakeReferrerAPI struct {
	remotes.Resolver // nil: only Resolve is called
	tags             []string
	tagsErr          error
	refs             []ocispec.Descriptor
	supported        bool
	refsErr          error
	resolved         map[string]ocispec.Descriptor // "repo:tag"
	calls            []string
}

func (f *fakeReferrerAPI) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	f.calls = append(f.calls, "resolve "+ref)
	d, ok := f.resolved[ref]
	if !ok {
		return "", ocispec.Descriptor{}, errors.New("not found: " + ref)
	}
	return ref, d, nil
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
// schema tags RegistrySource.Referrers returns.
func TestRegistrySourceReferrers(t *testing.T) {
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
			got, err := RegistrySource{Resolver: tc.api}.Referrers(context.Background(), img, subject)
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
		src := NewRegistrySource(api)
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
		got, err := RegistrySource{Resolver: plainResolver{}}.Referrers(context.Background(), img, subject)
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
