package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// TestExpiringTokens: a target whose bearer tokens live 2 s — and, in a
// second run, die up to 1 s before the expires_in they announce — gets a
// relocation of about 10 s through: digests preserved, a new token
// fetched when the registry refuses the old one (an upload that meets a
// dead token is redone), and no storm of token requests: at most about one
// token per scope per expiry.
func TestExpiringTokens(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	for _, tc := range []struct {
		name string
		auth registrytest.TokenAuth
	}{
		{"tokens live 2s", registrytest.TokenAuth{TTL: 2 * time.Second}},
		{"tokens die up to 1s early", registrytest.TokenAuth{TTL: 2 * time.Second, DeadEarly: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := tc.auth
			dst := registrytest.Start(t, registrytest.Options{TokenAuth: &auth})
			// Every request 250 ms late, one blob at a time: the run outlives
			// many tokens.
			slow := registrytest.NewProxy(dst, registrytest.ProxyOptions{Latency: 250 * time.Millisecond})
			defer slow.Close()
			mapPath := filepath.Join(t.TempDir(), "m.json")
			start := time.Now()
			r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", slow.Host+"/team", "--relocation-mapping", mapPath, "--jobs", "1")
			took := time.Since(start)
			if r.code != 0 {
				t.Fatalf("exited %d after %v", r.code, took)
			}
			// About 10 s here (the proxy's latency, not the machine, sets
			// it); 4 token lives is enough to have outlived several.
			if took < 4*auth.TTL {
				t.Errorf("the run took %v: too short to outlive tokens of %v", took, auth.TTL)
			}
			checkRelocated(t, f, dst, mapPath, f.refs)
			// About one token per scope per token life (the shortest, for
			// tokens that die early): at most took/life + 2 for each scope;
			// never a storm.
			limit := int(took/(auth.TTL-auth.DeadEarly)) + 2
			var lines []string
			for scope, times := range dst.Tokens.Issued() {
				lines = append(lines, fmt.Sprintf("%d %s", len(times), scope))
				if len(times) > limit {
					t.Errorf("%d tokens for %q in %v; want at most %d (one per expiry)", len(times), scope, took.Round(time.Millisecond), limit)
				}
			}
			t.Logf("run took %v; %d tokens:\n%s", took.Round(time.Millisecond), dst.Tokens.Total(), strings.Join(lines, "\n"))
		})
	}
}
