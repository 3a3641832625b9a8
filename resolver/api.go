package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/verify"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Resolver is what New returns: containerd's resolver, plus the reads of
// the registry API that containerd does not offer — tag lists and the OCI
// 1.1 referrers API — sent with the same hosts, TLS and credentials.
type Resolver struct {
	remotes.Resolver
	hosts   *hosts
	ua      string
	tracker docker.StatusTracker
	noMount sync.Map // registry host -> true: it declined a mount
	names   sync.Map // repository name -> reference.Named, parsed once
}

// named parses repo, a repository name, once per resolver: every blob,
// mount and manifest of a run names one of a few repositories, and parsing
// one is a regular expression.
func (r *Resolver) named(repo string) (reference.Named, error) {
	if n, ok := r.names.Load(repo); ok {
		return n.(reference.Named), nil
	}
	n, err := reference.ParseNormalizedNamed(repo)
	if err != nil {
		return nil, err
	}
	r.names.Store(repo, n)
	return n, nil
}

// maxTagPages bounds tag list pagination.
const maxTagPages = 100

// Tags lists the tags of repo (a repository name such as
// "registry.corp/team/app"), following pagination.
func (r *Resolver) Tags(ctx context.Context, repo string) ([]string, error) {
	named, err := r.named(repo)
	if err != nil {
		return nil, err
	}
	var tags []string
	next := "/tags/list?n=1000"
	for page := 0; next != "" && page < maxTagPages; page++ {
		var body struct {
			Tags []string `json:"tags"`
		}
		found, link, err := r.getJSON(ctx, named, next, "application/json", &body)
		if err != nil || !found {
			return tags, err
		}
		tags = append(tags, body.Tags...)
		next = nextLink(link, reference.Path(named))
	}
	return tags, nil
}

// Referrers returns the manifests that refer to subject in repo, through
// the OCI 1.1 referrers API. supported is false when the registry does
// not have the API (it answers 404, as distribution 2.8 does); callers then
// fall back to the referrers tag schema.
func (r *Resolver) Referrers(ctx context.Context, repo string, subject digest.Digest) (refs []ocispec.Descriptor, supported bool, err error) {
	named, err := r.named(repo)
	if err != nil {
		return nil, false, err
	}
	var idx ocispec.Index
	found, _, err := r.getJSON(ctx, named, "/referrers/"+subject.String(), ocispec.MediaTypeImageIndex, &idx)
	if err != nil || !found {
		return nil, false, err
	}
	return idx.Manifests, true, nil
}

// maxManifest bounds the manifests Manifest reads: distribution refuses
// bigger ones.
const maxManifest = 4 << 20

// manifestAccept is what Manifest accepts, as containerd's resolver asks.
var manifestAccept = strings.Join([]string{
	images.MediaTypeDockerSchema2Manifest,
	images.MediaTypeDockerSchema2ManifestList,
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	"*/*",
}, ", ")

// Manifest GETs the manifest (or index) ref of repo, ref being a tag or a
// digest, and returns its bytes with a descriptor of them: their size, the
// media type the registry gives, and their digest, computed here (sha256,
// or the algorithm of the registry's Docker-Content-Digest). It is
// containerd's Resolve and Fetch of the root in one request. Bytes that do
// not match the registry's own Docker-Content-Digest are an error matching
// verify.ErrDigestMismatch (fixup.ErrDigestMismatch). A manifest
// the registry does not have is an error matching errdefs.ErrNotFound, as
// containerd's.
func (r *Resolver) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	named, err := r.named(repo)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	var (
		desc ocispec.Descriptor
		data []byte
	)
	err = r.getBody(ctx, named, "/manifests/"+ref, manifestAccept, func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s:%s: %w", reference.TrimNamed(named), ref, errdefs.ErrNotFound)
		case resp.StatusCode != http.StatusOK:
			return unexpected(resp)
		}
		var err error
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
		if err != nil {
			return fmt.Errorf("GET %s: %w", resp.Request.URL.Redacted(), err)
		}
		if len(data) > maxManifest {
			return fmt.Errorf("GET %s: the manifest is larger than %d bytes", resp.Request.URL.Redacted(), maxManifest)
		}
		mediaType, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
		desc = ocispec.Descriptor{MediaType: strings.TrimSpace(mediaType), Digest: digest.FromBytes(data), Size: int64(len(data))}
		if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && d.Algorithm().Available() {
			// The registry says which bytes it meant to send.
			if got := d.Algorithm().FromBytes(data); got != d {
				return fmt.Errorf("%w: GET %s: the registry sent %s, its Docker-Content-Digest says %s", verify.ErrDigestMismatch, resp.Request.URL.Redacted(), got, d)
			}
			desc.Digest = d
		}
		return nil
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return desc, data, nil
}

// getJSON GETs path and decodes its JSON body into v. found is false when
// the registry has no such endpoint or repository (see unsupported). A
// body cut off in transit is fetched again, up to the resolver's retries:
// the transport retries failed requests, not failed reads. link is the
// response's Link header.
func (r *Resolver) getJSON(ctx context.Context, named reference.Named, path, accept string, v any) (found bool, link string, err error) {
	err = r.getBody(ctx, named, path, accept, func(resp *http.Response) error {
		if unsupported(resp) {
			found = false
			return nil
		}
		if err := decode(resp, v); err != nil {
			return err
		}
		found, link = true, resp.Header.Get("Link")
		return nil
	})
	if err != nil {
		return false, "", err
	}
	return found, link, nil
}

// getBody GETs path and hands the response to read, then closes its body.
// The transport has retried the request already: only a read that fails
// on the network (a body cut off in transit) is sent again, up to the
// resolver's retries.
func (r *Resolver) getBody(ctx context.Context, named reference.Named, path, accept string, read func(*http.Response) error) error {
	p := retry.Policy{Retries: r.hosts.retries, Logger: r.hosts.logger}
	return p.Do(ctx, "GET "+path, func(int) error {
		resp, err := r.get(ctx, named, path, accept)
		if err != nil {
			return retry.Permanent(err)
		}
		defer resp.Body.Close()
		return read(resp)
	})
}

// get sends an authorised GET for path under /v2/<repo>, with pull scope.
func (r *Resolver) get(ctx context.Context, named reference.Named, path, accept string) (*http.Response, error) {
	ctx = docker.WithScope(ctx, "repository:"+reference.Path(named)+":pull")
	return r.send(ctx, named, http.MethodGet, path, nil, http.Header{"Accept": {accept}})
}

// unsupported reports whether a registry answered that it has no such
// endpoint (or no such repository): 404, as distribution 2.8 answers for
// the referrers API, or 400/405 as other registries do. Authentication
// failures and server errors are not this.
func unsupported(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusNotImplemented:
		return true
	}
	return false
}

func decode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return unexpected(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", resp.Request.URL.Redacted(), err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("GET %s: %w", resp.Request.URL.Redacted(), err)
	}
	return nil
}

// nextLink returns the path (relative to /v2/<repo>) of the next page in
// an RFC 5988 Link header, or "".
func nextLink(link, repo string) string {
	if link == "" || !strings.Contains(link, `rel="next"`) {
		return ""
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return ""
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil {
		return ""
	}
	prefix := "/v2/" + repo
	if !strings.HasPrefix(u.Path, prefix) {
		return ""
	}
	p := strings.TrimPrefix(u.Path, prefix)
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p
}
