package registrytest

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// htpasswdFile returns the content of an htpasswd file (bcrypt hashes, the
// only kind distribution's htpasswd auth accepts; users sorted).
func htpasswdFile(users map[string]string) (string, error) {
	names := make([]string, 0, len(users))
	for u := range users {
		if u == "" || strings.ContainsAny(u, ":\r\n") {
			return "", fmt.Errorf("htpasswd: invalid user name %q", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		// The lowest cost: these are throwaway test credentials.
		hash, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%s\n", u, hash)
	}
	return b.String(), nil
}
