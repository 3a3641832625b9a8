package resolver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cnabio/cnab-relocate/internal/errbody"
)

// debugTransport logs every request it sends and the answer, at debug
// level: method, URL, status, the registry's error code and message,
// Docker-Content-Digest, where a redirect goes, and the time taken — each
// attempt, each redirect hop and each token fetch, as they go through it.
// It never logs a header but those, a body but an error's code and message,
// or a query value that could be a secret: no credential reaches the log.
type debugTransport struct {
	next   http.RoundTripper
	logger *slog.Logger
}

// debugging reports whether logger takes debug records.
func debugging(logger *slog.Logger) bool {
	return logger != nil && logger.Enabled(context.Background(), slog.LevelDebug)
}

func (d debugTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := d.next.RoundTrip(req)
	attrs := []any{"method", req.Method, "url", safeURL(req.URL)}
	if err != nil {
		d.logger.DebugContext(req.Context(), "request failed", append(attrs, "took", time.Since(start).Round(time.Millisecond), "err", err)...)
		return resp, err
	}
	attrs = append(attrs, "status", resp.StatusCode)
	if dg := resp.Header.Get("Docker-Content-Digest"); dg != "" {
		attrs = append(attrs, "digest", dg)
	}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if u, err := req.URL.Parse(loc); err == nil {
			attrs = append(attrs, "redirect", safeURL(u))
		}
	}
	if resp.StatusCode >= 400 && resp.Body != nil {
		code, msg, body := peekError(resp.Body)
		resp.Body = body
		if code != "" {
			attrs = append(attrs, "code", code, "message", msg)
		}
	}
	attrs = append(attrs, "took", time.Since(start).Round(time.Millisecond))
	d.logger.DebugContext(req.Context(), "request", attrs...)
	return resp, nil
}

// safeQuery are the query parameters logged with their values: the others
// (a signed URL's signature, a token) show as REDACTED.
var safeQuery = map[string]bool{
	"digest": true, "mount": true, "from": true, "n": true, "last": true,
	"service": true, "scope": true, "artifactType": true,
}

// safeURL is u without user information and with the values of query
// parameters that could be secrets redacted.
func safeURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k, vs := range q {
			if !safeQuery[k] {
				for i := range vs {
					vs[i] = "REDACTED"
				}
			}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// peekError reads the start of an error body for the registry's first
// error code and message, and returns a body that still reads whole.
func peekError(body io.ReadCloser) (code, message string, whole io.ReadCloser) {
	head, _ := io.ReadAll(io.LimitReader(body, 8<<10))
	whole = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), body), body}
	code, message, _ = errbody.Parse(head)
	return code, strings.TrimSpace(message), whole
}
