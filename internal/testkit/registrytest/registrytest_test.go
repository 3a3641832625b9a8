package registrytest_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// The tests that start a real docker-registry are in e2e/harness_test.go and
// e2e/harness_fault_test.go; these need no registry binary.

func TestStartWithoutBinary(t *testing.T) {
	t.Parallel()
	_, err := registrytest.StartProcess(context.Background(), registrytest.Options{Binary: "/nonexistent/docker-registry"})
	if !errors.Is(err, registrytest.ErrNoRegistry) || !strings.Contains(err.Error(), "install-deps.sh") {
		t.Errorf("StartProcess with a missing binary: %v, want ErrNoRegistry naming install-deps.sh", err)
	}
}

func TestRandomBytes(t *testing.T) {
	t.Parallel()
	a, b, c := registrytest.RandomBytes(1, 1000), registrytest.RandomBytes(1, 1000), registrytest.RandomBytes(2, 1000)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || len(a) != 1000 {
		t.Error("RandomBytes is not deterministic per seed")
	}
	if !bytes.Equal(registrytest.RandomBytes(1, 10), a[:10]) {
		t.Error("RandomBytes(seed, n) is not a prefix of a longer one")
	}
}
