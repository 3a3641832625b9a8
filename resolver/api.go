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

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
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
}

// maxTagPages bounds tag list pagination.
const maxTagPages = 100

// Tags lists the tags of repo (a repository name such as
// "registry.corp/team/app"), following pagination.
func (r *Resolver) Tags(ctx context.Context, repo string) ([]string, error) {
	named, err := reference.ParseNormalizedNamed(repo)
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
	named, err := reference.ParseNormalizedNamed(repo)
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

// getJSON GETs path and decodes its JSON body into v. found is false when
// the registry has no such endpoint or repository (see unsupported). A
// body cut off in transit is fetched again, up to the resolver's retries:
// the transport retries failed requests, not failed reads. link is the
// response's Link header.
func (r *Resolver) getJSON(ctx context.Context, named reference.Named, path, accept string, v any) (found bool, link string, err error) {
	// The transport has retried the request already: only a failed read
	// of the body is retried here.
	var requestErr error
	p := retry.Policy{Retries: r.hosts.retries, Logger: r.hosts.logger,
		Retryable: func(err error) bool { return err != requestErr && retry.TransientNetError(err) }}
	err = p.Do(ctx, "GET "+path, func(int) error {
		resp, err := r.get(ctx, named, path, accept)
		if err != nil {
			requestErr = err
			return err
		}
		if unsupported(resp) {
			resp.Body.Close()
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
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", resp.Request.URL.Redacted(), resp.Status, strings.TrimSpace(string(body)))
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
