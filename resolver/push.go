package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/cnabio/cnab-relocate/internal/readerr"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobPush says how PushBlob placed a blob.
type BlobPush int

const (
	// BlobUploaded: its bytes were sent.
	BlobUploaded BlobPush = iota
	// BlobMounted: the registry linked it from another repository.
	BlobMounted
	// BlobExisted: the repository had it already.
	BlobExisted
)

// PushBlob places desc in repo (a repository name such as
// "registry.corp/team/app") with as few requests as the registry API
// allows: one POST asking the registry to mount the blob from mountFrom (a
// repository path on the same registry, such as "team/base"), or, when
// mountFrom is "", from repo itself, which a registry answers with 201
// when repo has the blob already — no HEAD first. Otherwise that POST
// opened an upload session, and one monolithic PUT ?digest= sends the body
// open returns; open is not called when nothing needs uploading. A
// registry that does not mount answers 202 every time: once one has
// declined a mount from a repository that has the blob, PushBlob looks for
// each blob (HEAD) before its POST there, as containerd does everywhere.
//
// A PUT refused because its token died on the way is sent again, whole,
// with a new token, up to maxTokenRefusals times. Any other failure of it
// (a *StatusError, a network error, or the error of open's reader,
// returned as it is) is for the caller to retry whole when it is
// temporary (see StatusError.Temporary).
func (r *Resolver) PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, mountFrom string, open func(context.Context) (io.ReadCloser, error)) (BlobPush, error) {
	named, err := r.named(repo)
	if err != nil {
		return 0, err
	}
	how, err := r.pushBlob(ctx, named, desc, mountFrom, open)
	var tr tokenRefused
	for i := 0; i < maxTokenRefusals && errors.As(err, &tr); i++ {
		how, err = r.pushBlob(ctx, named, desc, mountFrom, open)
	}
	return how, err
}

// tokenRefused is a PUT's 401 after which the authorizer fetches a new
// token.
type tokenRefused struct{ error }

func (e tokenRefused) Unwrap() error { return e.error }

func (r *Resolver) pushBlob(ctx context.Context, named reference.Named, desc ocispec.Descriptor, mountFrom string, open func(context.Context) (io.ReadCloser, error)) (BlobPush, error) {
	path := reference.Path(named)
	from := path
	if mountFrom != "" {
		from = mountFrom
	}
	ctx = docker.WithScope(ctx, "repository:"+path+":pull,push")
	if from != path {
		ctx = docker.WithScope(ctx, "repository:"+from+":pull")
	}
	domain := reference.Domain(named)
	_, noMount := r.noMount.Load(domain)
	if noMount {
		if ok, err := r.blobExists(ctx, named, desc); err != nil || ok {
			return BlobExisted, err
		}
	}
	q := url.Values{"mount": {desc.Digest.String()}, "from": {from}}
	resp, err := r.send(ctx, named, http.MethodPost, "/blobs/uploads/?"+q.Encode(), nil, nil)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && from != path {
		// The token may not read the repository to mount from: ask
		// within repo alone.
		resp.Body.Close()
		from = path
		q.Set("from", from)
		resp, err = r.send(ctx, named, http.MethodPost, "/blobs/uploads/?"+q.Encode(), nil, nil)
	}
	if err != nil {
		return 0, err
	}
	loc := resp.Header.Get("Location")
	switch resp.StatusCode {
	case http.StatusCreated:
		resp.Body.Close()
		if from == path {
			return BlobExisted, nil
		}
		return BlobMounted, nil
	case http.StatusAccepted:
		resp.Body.Close()
		if from != path && !noMount {
			// The registry declined to mount from a repository that has
			// the blob: it does not mount (or not for us), so a 202 from
			// it says nothing about what repo has. From now on, blobs to
			// it are looked for (HEAD) first.
			r.noMount.Store(domain, true)
			if ok, err := r.blobExists(ctx, named, desc); err != nil || ok {
				return BlobExisted, err
			}
		}
	default:
		return 0, unexpected(resp)
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil || loc == "" {
		return 0, fmt.Errorf("POST %s: upload session location %q: not a URL", resp.Request.URL.Redacted(), loc)
	}
	uq := u.Query()
	uq.Set("digest", desc.Digest.String())
	u.RawQuery = uq.Encode()

	rc, err := open(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	body := &readerr.Reader{R: rc}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = desc.Size
	if desc.Size == 0 {
		// Else net/http sends a body of unknown length, chunked.
		req.Body, req.GetBody = http.NoBody, nil
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("User-Agent", r.ua)
	host, err := r.host(named)
	if err != nil {
		return 0, err
	}
	if host.Authorizer != nil {
		if err := host.Authorizer.Authorize(ctx, req); err != nil {
			return 0, fmt.Errorf("registry %s: %w", reference.Domain(named), err)
		}
	}
	resp, err = r.hosts.apiClient.Do(req)
	if body.Err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return 0, body.Err
	}
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusCreated {
		if resp.StatusCode == http.StatusUnauthorized && host.Authorizer != nil {
			// The token died during the upload: once the authorizer
			// knows, the next request gets a new one.
			if host.Authorizer.AddResponses(ctx, []*http.Response{resp}) == nil {
				return 0, tokenRefused{unexpected(resp)}
			}
		}
		return 0, unexpected(resp)
	}
	resp.Body.Close()
	return BlobUploaded, nil
}

// PushManifest PUTs data, a manifest or index of mediaType, byte for byte
// into repo under ref: a tag, or its digest. One request, no HEAD first.
func (r *Resolver) PushManifest(ctx context.Context, repo, ref, mediaType string, data []byte) error {
	named, err := r.named(repo)
	if err != nil {
		return err
	}
	ctx = docker.WithScope(ctx, "repository:"+reference.Path(named)+":pull,push")
	resp, err := r.send(ctx, named, http.MethodPut, "/manifests/"+ref, data, http.Header{"Content-Type": {mediaType}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return unexpected(resp)
	}
	return nil
}

// BlobExists reports whether repo (a repository name such as
// "registry.corp/team/app") has blob desc: one HEAD, with a pull token.
func (r *Resolver) BlobExists(ctx context.Context, repo string, desc ocispec.Descriptor) (bool, error) {
	named, err := r.named(repo)
	if err != nil {
		return false, err
	}
	ctx = docker.WithScope(ctx, "repository:"+reference.Path(named)+":pull")
	return r.blobExists(ctx, named, desc)
}

// blobExists reports whether repo named has desc (HEAD).
func (r *Resolver) blobExists(ctx context.Context, named reference.Named, desc ocispec.Descriptor) (bool, error) {
	resp, err := r.send(ctx, named, http.MethodHead, "/blobs/"+desc.Digest.String(), nil, nil)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		resp.Body.Close()
		return true, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return false, nil
	}
	return false, unexpected(resp)
}

// unexpected is resp, a status the caller did not expect, as a
// *StatusError that names the request; it closes resp's body.
func unexpected(resp *http.Response) error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	se := newStatusError(resp, body)
	se.request = true
	return se
}

// host is the registry host of named's domain.
func (r *Resolver) host(named reference.Named) (docker.RegistryHost, error) {
	hs, err := r.hosts.registryHosts(reference.Domain(named))
	if err != nil {
		return docker.RegistryHost{}, err
	}
	return hs[0], nil
}

// send sends an authorised request for path under /v2/<repo>, with body
// (nil: none) and header, answering the registry's auth challenge as
// containerd's requests do: once for a login, and again each time the
// registry refuses a new token, up to maxTokenRefusals times (a token
// server whose clock runs ahead). The scopes are ctx's (docker.WithScope).
func (r *Resolver) send(ctx context.Context, named reference.Named, method, path string, body []byte, header http.Header) (*http.Response, error) {
	domain := reference.Domain(named)
	host, err := r.host(named)
	if err != nil {
		return nil, err
	}
	u := host.Scheme + "://" + host.Host + host.Path + "/" + reference.Path(named) + path
	var responses []*http.Response
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", r.ua)
		if host.Authorizer != nil {
			if err := host.Authorizer.Authorize(ctx, req); err != nil {
				return nil, fmt.Errorf("registry %s: %w", domain, err)
			}
		}
		resp, err := r.hosts.apiClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", domain, err)
		}
		if resp.StatusCode != http.StatusUnauthorized || host.Authorizer == nil {
			return resp, nil
		}
		// Also after the retry: the authorizer tells refused credentials
		// (an *AuthError naming the user and where they came from).
		responses = append(responses, resp)
		if err := host.Authorizer.AddResponses(ctx, responses); err != nil {
			if errdefs.IsNotImplemented(err) {
				return resp, nil
			}
			resp.Body.Close()
			return nil, err
		}
		if attempt > maxTokenRefusals {
			return resp, nil
		}
		resp.Body.Close()
	}
}
