package registrytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types (Docker Image Manifest V2, Schema 2).
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// ManifestAccept is the Accept header Client sends for manifests: all four manifest media types.
var ManifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	MediaTypeDockerManifest,
	MediaTypeDockerManifestList,
}, ", ")

// maxManifestSize bounds manifest bodies read by GetManifest.
const maxManifestSize = 8 << 20

// Client talks the Registry HTTP API V2 with plain net/http, for seeding registries and checking
// what is in them independently of the code under test. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host, no trailing slash
	baseErr    error
	hc         *http.Client
	user, pass string
}

// NewClient returns a Client for the registry at baseURL ("http://127.0.0.1:5000", say). A nil
// httpClient means a client without proxies that trusts the system roots. With user set, every
// request carries Basic auth.
func NewClient(baseURL string, httpClient *http.Client, user, pass string) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: httpClient, user: user, pass: pass}
	if u, err := url.Parse(c.base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.baseErr = fmt.Errorf("registrytest: invalid registry URL %q", baseURL)
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		c.hc = &http.Client{Transport: tr}
	}
	return c
}

// PushBlob uploads data to repo (POST then PUT ?digest=) unless a HEAD finds it already there.
// The descriptor's media type is application/octet-stream.
func (c *Client) PushBlob(ctx context.Context, repo string, data []byte) (ocispec.Descriptor, error) {
	return c.pushBlob(ctx, repo, "application/octet-stream", data)
}

func (c *Client) pushBlob(ctx context.Context, repo, mediaType string, data []byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	exists, err := c.BlobExists(ctx, repo, desc.Digest)
	if err != nil || exists {
		return desc, err
	}
	resp, err := c.do(ctx, http.MethodPost, c.base+"/v2/"+repo+"/blobs/uploads/", nil, nil, 0, http.StatusAccepted)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pushing blob %s to %s: %w", desc.Digest, repo, err)
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return ocispec.Descriptor{}, fmt.Errorf("pushing blob %s to %s: bad upload Location %q", desc.Digest, repo, resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", desc.Digest.String())
	loc.RawQuery = q.Encode()
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err = c.do(ctx, http.MethodPut, loc.String(), hdr, bytes.NewReader(data), int64(len(data)), http.StatusCreated)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pushing blob %s to %s: %w", desc.Digest, repo, err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != desc.Digest.String() {
		return ocispec.Descriptor{}, fmt.Errorf("pushing blob %s to %s: registry says digest %s", desc.Digest, repo, got)
	}
	return desc, nil
}

// PushManifest puts body as a manifest of repo under reference (a tag or a digest), with
// Content-Type mediaType. It returns the manifest's descriptor.
func (c *Client) PushManifest(ctx context.Context, repo, reference, mediaType string, body []byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
	hdr := http.Header{"Content-Type": {mediaType}}
	resp, err := c.do(ctx, http.MethodPut, c.manifestURL(repo, reference), hdr, bytes.NewReader(body), int64(len(body)), http.StatusCreated)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pushing manifest %s:%s: %w", repo, reference, err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != desc.Digest.String() {
		return ocispec.Descriptor{}, fmt.Errorf("pushing manifest %s:%s: registry says digest %s, want %s", repo, reference, got, desc.Digest)
	}
	return desc, nil
}

// HeadManifest returns the descriptor of repo's manifest reference (a tag or a digest), from a
// HEAD request: digest from Docker-Content-Digest, size from Content-Length, media type from
// Content-Type. A missing manifest is an error matching ErrNotFound.
func (c *Client) HeadManifest(ctx context.Context, repo, reference string) (ocispec.Descriptor, error) {
	hdr := http.Header{"Accept": {ManifestAccept}}
	resp, err := c.do(ctx, http.MethodHead, c.manifestURL(repo, reference), hdr, nil, 0, http.StatusOK)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("head manifest %s:%s: %w", repo, reference, err)
	}
	resp.Body.Close()
	dgst, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("head manifest %s:%s: Docker-Content-Digest %q: %w", repo, reference, resp.Header.Get("Docker-Content-Digest"), err)
	}
	if want, err := digest.Parse(reference); err == nil && want != dgst {
		return ocispec.Descriptor{}, fmt.Errorf("head manifest %s@%s: registry says digest %s", repo, reference, dgst)
	}
	return ocispec.Descriptor{MediaType: mediaType(resp.Header), Digest: dgst, Size: resp.ContentLength}, nil
}

// GetManifest fetches repo's manifest reference (a tag or a digest) and its descriptor. The
// digest is that of the bytes received; it must match Docker-Content-Digest and a digest
// reference.
func (c *Client) GetManifest(ctx context.Context, repo, reference string) ([]byte, ocispec.Descriptor, error) {
	hdr := http.Header{"Accept": {ManifestAccept}}
	resp, err := c.do(ctx, http.MethodGet, c.manifestURL(repo, reference), hdr, nil, 0, http.StatusOK)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s:%s: %w", repo, reference, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s:%s: %w", repo, reference, err)
	}
	if len(body) > maxManifestSize {
		return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s:%s: larger than %d bytes", repo, reference, maxManifestSize)
	}
	desc := ocispec.Descriptor{MediaType: mediaType(resp.Header), Digest: digest.FromBytes(body), Size: int64(len(body))}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != desc.Digest.String() {
		return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s:%s: Docker-Content-Digest %s, body digest %s", repo, reference, got, desc.Digest)
	}
	if want, err := digest.Parse(reference); err == nil && want != desc.Digest {
		return nil, ocispec.Descriptor{}, fmt.Errorf("get manifest %s@%s: body digest %s", repo, reference, desc.Digest)
	}
	return body, desc, nil
}

// DeleteManifest deletes repo's manifest dgst (distribution deletes by digest only; its tags go
// with it).
func (c *Client) DeleteManifest(ctx context.Context, repo string, dgst digest.Digest) error {
	resp, err := c.do(ctx, http.MethodDelete, c.manifestURL(repo, dgst.String()), nil, nil, 0, http.StatusAccepted)
	if err != nil {
		return fmt.Errorf("delete manifest %s@%s: %w", repo, dgst, err)
	}
	resp.Body.Close()
	return nil
}

// BlobExists reports whether a HEAD on repo's blob dgst answers 200 (true) or 404 (false).
func (c *Client) BlobExists(ctx context.Context, repo string, dgst digest.Digest) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, c.base+"/v2/"+repo+"/blobs/"+dgst.String(), nil, nil, 0, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, fmt.Errorf("head blob %s@%s: %w", repo, dgst, err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// GetBlob fetches repo's blob dgst and checks its digest.
func (c *Client) GetBlob(ctx context.Context, repo string, dgst digest.Digest) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base+"/v2/"+repo+"/blobs/"+dgst.String(), nil, nil, 0, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("get blob %s@%s: %w", repo, dgst, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get blob %s@%s: %w", repo, dgst, err)
	}
	if got := digest.FromBytes(data); got != dgst {
		return nil, fmt.Errorf("get blob %s@%s: content has digest %s", repo, dgst, got)
	}
	return data, nil
}

// Tags lists repo's tags (one page of up to 1000).
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base+"/v2/"+repo+"/tags/list?n=1000", nil, nil, 0, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	defer resp.Body.Close()
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	return list.Tags, nil
}

// Catalog lists the registry's repositories (GET /v2/_catalog, one page of up to 1000): those
// that hold a manifest, in the registry's order.
func (c *Client) Catalog(ctx context.Context) ([]string, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base+"/v2/_catalog?n=1000", nil, nil, 0, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	defer resp.Body.Close()
	var list struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return list.Repositories, nil
}

func (c *Client) manifestURL(repo, reference string) string {
	return c.base + "/v2/" + repo + "/manifests/" + reference
}

// do sends a request and returns the response if its status is one of want; otherwise it closes
// the body and returns a *ResponseError.
func (c *Client) do(ctx context.Context, method, u string, hdr http.Header, body io.Reader, length int64, want ...int) (*http.Response, error) {
	if c.baseErr != nil {
		return nil, c.baseErr
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = length
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return nil, &ResponseError{Method: method, URL: redact(u), StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
}

// redact drops the query (upload state tokens) from a URL for error messages.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func mediaType(h http.Header) string {
	ct := h.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return ct
}
