package resolver

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestDebugLogsRequestsNotSecrets: with a debug logger, every request and
// its answer is logged — the Basic challenge, the redirect and where it
// goes, the registry's error code and message — and no credential: not
// the password, not the Authorization header, not a signed URL's
// signature.
func TestDebugLogsRequestsNotSecrets(t *testing.T) {
	t.Parallel()
	const pass = "s3cret-Zq7"
	var s *apiServer
	s = newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="stub"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v2/team/app/tags/list":
			http.Redirect(w, r, "/signed/tags?X-Amz-Signature=SIGNATURE-8f3&n=10", http.StatusTemporaryRedirect)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`))
		}
	})
	var logs bytes.Buffer
	dir := writeConfig(t, map[string]any{"auths": map[string]any{s.Host: authEntry("alice", pass)}})
	r, err := New(Options{ConfigDir: dir, CertsDir: "-", Retries: ptr(0),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Tags(context.Background(), s.Host+"/team/app"); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	t.Logf("debug log:\n%s", out)
	for _, want := range []string{
		"method=GET", "status=401", "code=UNAUTHORIZED", "status=307", "redirect=",
		"status=404", "code=NAME_UNKNOWN", `message="repository name not known to registry"`, "X-Amz-Signature=REDACTED", "n=10", "took=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the debug log does not show %s", want)
		}
	}
	for _, secret := range []string{pass, base64.StdEncoding.EncodeToString([]byte("alice:" + pass)), "Authorization", "SIGNATURE-8f3"} {
		if strings.Contains(out, secret) {
			t.Errorf("the debug log shows a secret: %q", secret)
		}
	}
}
