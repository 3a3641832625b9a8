package registrytest

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHtpasswdFile(t *testing.T) {
	t.Parallel()
	got, err := htpasswdFile(map[string]string{"bob": "b", "alice": "a"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "alice:$2") || !strings.HasPrefix(lines[1], "bob:$2") {
		t.Fatalf("htpasswd file:\n%s", got)
	}
	hash := strings.TrimPrefix(lines[0], "alice:")
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("a")); err != nil {
		t.Errorf("alice's hash does not match her password: %v", err)
	}
	if _, err := htpasswdFile(map[string]string{"a:b": "x"}); err == nil {
		t.Error("a user name with a colon was accepted")
	}
}
