package relocator

import (
	_ "crypto/sha256" // register sha256 so digests in references parse
	_ "crypto/sha512" // register sha384, sha512
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Kind is a kind of mapping. See the package doc for each grammar.
type Kind string

const (
	// OneToOne gives every source repository its own flattened target
	// repository under the prefix, named as `duffle relocate` names it. The default.
	OneToOne Kind = "one-to-one"
	// ManyToOne pushes every image, by digest, into one target repository, as
	// cnab-to-oci's fixup does.
	ManyToOne Kind = "many-to-one"
	// Prefix keeps each source repository's path (without its registry host)
	// under the prefix.
	Prefix Kind = "prefix"
)

// kinds lists the valid kinds, in the order error messages name them.
var kinds = []Kind{OneToOne, ManyToOne, Prefix}

// ParseKind parses a --mapping flag value. "" means OneToOne. Any other value
// must be exactly one of "one-to-one", "many-to-one" or "prefix"; otherwise
// the error names the value, lists the valid ones and wraps ErrInvalidKind.
func ParseKind(s string) (Kind, error) {
	if s == "" {
		return OneToOne, nil
	}
	for _, k := range kinds {
		if s == string(k) {
			return k, nil
		}
	}
	return "", kindError(s)
}

func kindError(s string) error {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	return &valueError{subject: "mapping", value: s,
		problem: "must be one of " + strings.Join(names, ", "), sentinel: ErrInvalidKind}
}

// Mapping maps source references to target references. The zero value is not
// usable: use New. A Mapping is immutable and safe for concurrent use.
type Mapping struct {
	kind Kind
	repo string // as given to New, validated
	// target is repo parsed (ManyToOne only).
	target reference.Named
}

// New validates repo for kind and returns a mapping. kind "" means OneToOne.
//
// For OneToOne and Prefix, repo is the repository prefix P: a registry host
// (optionally with a port) followed by zero or more path components, e.g.
// "registry.corp/team", "localhost:5000/team" or a bare "registry.corp". As in
// docker, a first component without "." or ":" that is not "localhost" is a
// Docker Hub namespace ("team/x" means docker.io/team/x). P must be lower case,
// have no tag, no digest, no empty component and no trailing slash, and leave
// room for the names it produces (one-to-one: P, "/" and the 32-character hash
// within 255 characters once normalised).
//
// For ManyToOne, repo is the single target repository, validated the same way;
// it must name a repository, not a bare registry host.
//
// Errors name the value and what is wrong, e.g.
// `repository prefix "Example.com/User": must be lower case`, and wrap
// ErrInvalidPrefix (or ErrInvalidKind for an unknown kind).
func New(kind Kind, repo string) (*Mapping, error) {
	if kind == "" {
		kind = OneToOne
	}
	subject := "repository prefix"
	switch kind {
	case OneToOne, Prefix:
	case ManyToOne:
		subject = "target repository"
	default:
		return nil, kindError(string(kind))
	}
	bad := func(problem string, cause error) error {
		return &valueError{subject: subject, value: repo, problem: problem, sentinel: ErrInvalidPrefix, cause: cause}
	}

	norm, err := validateRepo(repo, bad)
	if err != nil {
		return nil, err
	}
	m := &Mapping{kind: kind, repo: repo}
	switch kind {
	case OneToOne:
		// The shortest one-to-one name is P/H.
		if limit := reference.NameTotalLengthMax - 1 - hashLen; len(norm) > limit {
			return nil, bad(fmt.Sprintf("too long: %d characters (normalised %q); at most %d leave room for the %d-character hash",
				len(norm), norm, limit, hashLen), nil)
		}
	case Prefix:
		// The shortest prefix name is P/x.
		if limit := reference.NameTotalLengthMax - 2; len(norm) > limit {
			return nil, bad(fmt.Sprintf("too long: %d characters (normalised %q); at most %d", len(norm), norm, limit), nil)
		}
	case ManyToOne:
		if !strings.Contains(repo, "/") && isHost(repo) {
			return nil, bad("names a registry host, not a repository (want e.g. "+repo+"/team/app)", nil)
		}
		t, err := reference.ParseNormalizedNamed(repo)
		if err != nil {
			return nil, bad("not a valid repository", err)
		}
		if len(t.Name()) > reference.NameTotalLengthMax {
			return nil, bad(fmt.Sprintf("too long: %d characters (normalised %q); at most %d",
				len(t.Name()), t.Name(), reference.NameTotalLengthMax), nil)
		}
		m.target = t
	}
	return m, nil
}

// anchoredDomain matches a whole registry host with optional port.
var anchoredDomain = regexp.MustCompile(`^(?:` + reference.DomainRegexp.String() + `)$`)

// isHost reports whether a single component reads as a registry host the way
// docker reads the first component of a name: it has a "." or a ":", or is
// "localhost".
func isHost(s string) bool {
	return (s == "localhost" || strings.ContainsAny(s, ".:")) && anchoredDomain.MatchString(s)
}

// validateRepo checks a prefix or target repository and returns its
// normalised form (as docker would read P: "team" -> "docker.io/team").
func validateRepo(repo string, bad func(string, error) error) (string, error) {
	switch {
	case repo == "":
		return "", bad("must not be empty", nil)
	case strings.ToLower(repo) != repo:
		return "", bad("must be lower case", nil)
	case strings.HasSuffix(repo, "/"):
		return "", bad("must not end with a slash", nil)
	case strings.HasPrefix(repo, "/") || strings.Contains(repo, "//"):
		return "", bad("must not have an empty path component", nil)
	case strings.Contains(repo, "@"):
		return "", bad("must not have a digest", nil)
	}
	first, rest, multi := strings.Cut(repo, "/")
	if multi && strings.Contains(rest, ":") || !multi && strings.Contains(first, ":") && !isHost(first) {
		return "", bad("must not have a tag", nil)
	}
	if isHost(first) && !strings.HasSuffix(first, "]") {
		if i := strings.LastIndexByte(first, ':'); i >= 0 {
			if p, err := strconv.Atoi(first[i+1:]); err != nil || p < 1 || p > 65535 {
				return "", bad(fmt.Sprintf("port %q out of range 1-65535", first[i+1:]), nil)
			}
		}
	}
	// Validate P as the start of a name: P + "/x" must parse, without being
	// rewritten beyond docker's normalisation.
	n, err := reference.ParseNormalizedNamed(repo + "/x")
	if err != nil {
		return "", bad("not a valid reference", err)
	}
	norm, ok := strings.CutSuffix(n.Name(), "/x")
	if !ok || !reference.IsNameOnly(n) {
		return "", bad("not a valid repository prefix", nil)
	}
	return norm, nil
}

// Kind returns the mapping's kind.
func (m *Mapping) Kind() Kind { return m.kind }

// Repository returns the prefix (OneToOne, Prefix) or target repository
// (ManyToOne) exactly as given to New.
func (m *Mapping) Repository() string { return m.repo }

// Map returns the relocated reference for src.
//
// src is normalised first (docker rules: "nginx" is docker.io/library/nginx).
// dgst is the image's root digest; ManyToOne requires it (else the error wraps
// ErrDigestRequired) and OneToOne and Prefix ignore it.
//
//   - OneToOne: the duffle name (see the package doc), then src's tag, then src's
//     digest: x:t -> y:t, x@d -> y@d, x:t@d -> y:t@d.
//   - Prefix: P "/" path of src without its registry host, then src's tag and
//     digest: docker.io/istio/proxyv2:1.2 -> P/istio/proxyv2:1.2, nginx -> P/library/nginx.
//   - ManyToOne: target@dgst; src's tag and digest are dropped.
//
// The result always parses with reference.ParseNormalizedNamed and its name is
// at most 255 characters; when that cannot be met the error names src and
// wraps ErrInvalidTarget.
func (m *Mapping) Map(src reference.Named, dgst digest.Digest) (reference.Named, error) {
	if m == nil || m.kind == "" {
		return nil, fmt.Errorf("relocator: Map on a Mapping not made by New")
	}
	n, err := normalise(src)
	if err != nil {
		return nil, err
	}
	return m.mapNormalised(src, n, dgst)
}

// mapNormalised maps n, the normalised form of src (which errors name).
func (m *Mapping) mapNormalised(src, n reference.Named, dgst digest.Digest) (reference.Named, error) {
	switch m.kind {
	case ManyToOne:
		if dgst == "" {
			return nil, fmt.Errorf("relocating %s to %s: many-to-one pushes by digest: %w", src, m.repo, ErrDigestRequired)
		}
		if err := dgst.Validate(); err != nil {
			return nil, fmt.Errorf("relocating %s: %w: digest %q: %w", src, ErrInvalidTarget, dgst, err)
		}
		t, err := reference.WithDigest(m.target, dgst)
		if err != nil {
			return nil, fmt.Errorf("relocating %s: %w: digest %q: %w", src, ErrInvalidTarget, dgst, err)
		}
		return t, nil
	case OneToOne:
		return finish(src, n, oneToOneName(m.repo, n.Name()))
	default: // Prefix
		return finish(src, n, m.repo+"/"+reference.Path(n))
	}
}

// normalise parses src again with docker's rules (docker.io/library/...).
func normalise(src reference.Named) (reference.Named, error) {
	if src == nil {
		return nil, fmt.Errorf("relocating: no source reference: %w", ErrInvalidTarget)
	}
	n, err := reference.ParseNormalizedNamed(src.String())
	if err != nil {
		return nil, fmt.Errorf("relocating %s: %w", src, err)
	}
	return n, nil
}

// finish parses the target name and puts back n's tag, then its digest.
func finish(src, n reference.Named, name string) (reference.Named, error) {
	t, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return nil, fmt.Errorf("relocating %s: %w %q: %w", src, ErrInvalidTarget, name, err)
	}
	// The 255 limit applies to the whole name (as docker/distribution 2.x and
	// duffle applied it), not only to the path as distribution/reference now does.
	if l := len(t.Name()); l > reference.NameTotalLengthMax {
		return nil, fmt.Errorf("relocating %s: %w %q: name is %d characters, more than %d",
			src, ErrInvalidTarget, t.Name(), l, reference.NameTotalLengthMax)
	}
	if tagged, ok := n.(reference.Tagged); ok {
		if t, err = reference.WithTag(t, tagged.Tag()); err != nil {
			return nil, fmt.Errorf("relocating %s: %w: %w", src, ErrInvalidTarget, err)
		}
	}
	if digested, ok := n.(reference.Digested); ok {
		if t, err = reference.WithDigest(t, digested.Digest()); err != nil {
			return nil, fmt.Errorf("relocating %s: %w: %w", src, ErrInvalidTarget, err)
		}
	}
	return t, nil
}

// Check returns an error when two distinct source repositories among srcs
// would map to the same target repository: it names both sources and the
// target and wraps ErrCollision. Tags and digests are ignored, and two
// spellings of one repository ("nginx", "docker.io/library/nginx") are one
// source. The first collision in srcs order is reported. A source that cannot
// be mapped at all returns Map's error. ManyToOne never collides: every image
// goes to one repository by design.
func (m *Mapping) Check(srcs []reference.Named) error {
	if m == nil || m.kind == "" {
		return fmt.Errorf("relocator: Check on a Mapping not made by New")
	}
	if m.kind == ManyToOne {
		return nil
	}
	first := make(map[string]string, len(srcs)) // target repository -> first source repository
	for _, src := range srcs {
		n, err := normalise(src)
		if err != nil {
			return err
		}
		t, err := m.mapNormalised(src, n, "")
		if err != nil {
			return err
		}
		target, source := t.Name(), n.Name()
		prev, ok := first[target]
		if !ok {
			first[target] = source
			continue
		}
		if prev != source {
			return fmt.Errorf("source repositories %s and %s both map to %s: %w", prev, source, target, ErrCollision)
		}
	}
	return nil
}
