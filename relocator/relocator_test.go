package relocator

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

const (
	dgstA = "sha256:4d41eeb38fb14266b7c0461ef1ef0b2f8c05f41cd544987a259a9d92cdad2540"
	dgstB = "sha256:deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
)

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func mustParse(t testing.TB, s string) reference.Named {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		t.Fatalf("ParseNormalizedNamed(%q): %v", s, err)
	}
	return n
}

func mustNew(t testing.TB, kind Kind, repo string) *Mapping {
	t.Helper()
	m, err := New(kind, repo)
	if err != nil {
		t.Fatalf("New(%q, %q): %v", kind, repo, err)
	}
	return m
}

// prefixOfLen returns a valid prefix of exactly n characters (n >= 14).
func prefixOfLen(n int) string {
	return "example.com/" + strings.Repeat("p", n-len("example.com/"))
}

func TestParseKind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    Kind
		wantErr string
	}{
		{in: "", want: OneToOne},
		{in: "one-to-one", want: OneToOne},
		{in: "many-to-one", want: ManyToOne},
		{in: "prefix", want: Prefix},
		{in: "flat", wantErr: `mapping "flat": must be one of one-to-one, many-to-one, prefix`},
		{in: "One-To-One", wantErr: `mapping "One-To-One": must be one of one-to-one, many-to-one, prefix`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseKind(tc.in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrInvalidKind) {
					t.Fatalf("ParseKind(%q) = %q, %v; want error %q wrapping ErrInvalidKind", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseKind(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		kind    Kind
		repo    string
		wantErr string // "" means valid
	}{
		{name: "host and path", repo: "example.com/user"},
		{name: "host with port", repo: "localhost:5000/team"},
		{name: "bare host", repo: "example.com"},
		{name: "bare host with port", repo: "localhost:5000"},
		{name: "bare localhost", repo: "localhost"},
		{name: "ipv6 host", repo: "[::1]:5000/team"},
		{name: "docker hub namespace", repo: "team"},
		{name: "deep path", repo: "registry.corp/a/b/c"},
		{name: "empty kind is one-to-one", kind: "", repo: "example.com/user"},
		{name: "prefix kind", kind: Prefix, repo: "example.com/user"},
		{name: "many-to-one", kind: ManyToOne, repo: "registry.corp/team/app"},
		{name: "many-to-one hub", kind: ManyToOne, repo: "team/app"},

		{name: "upper case", repo: "Example.com/User",
			wantErr: `repository prefix "Example.com/User": must be lower case`},
		{name: "trailing slash", repo: "example.com/user/",
			wantErr: `repository prefix "example.com/user/": must not end with a slash`},
		{name: "tag", repo: "example.com/user:tag",
			wantErr: `repository prefix "example.com/user:tag": must not have a tag`},
		{name: "bare name with tag", repo: "user:tag",
			wantErr: `repository prefix "user:tag": must not have a tag`},
		{name: "digest", repo: "example.com/user@" + dgstA,
			wantErr: `repository prefix "example.com/user@` + dgstA + `": must not have a digest`},
		{name: "empty", repo: "",
			wantErr: `repository prefix "": must not be empty`},
		{name: "empty component", repo: "example.com//user",
			wantErr: `repository prefix "example.com//user": must not have an empty path component`},
		{name: "leading slash", repo: "/user",
			wantErr: `repository prefix "/user": must not have an empty path component`},
		{name: "bad port", repo: "localhost:99999/team",
			wantErr: `repository prefix "localhost:99999/team": port "99999" out of range 1-65535`},
		{name: "bad characters", repo: "example.com/us er",
			wantErr: `repository prefix "example.com/us er": not a valid reference: invalid reference format`},
		{name: "bad path component", repo: "example.com/-user",
			wantErr: `repository prefix "example.com/-user": not a valid reference: invalid reference format`},
		{name: "one-to-one longest", repo: prefixOfLen(222)},
		{name: "one-to-one too long", repo: prefixOfLen(223),
			wantErr: `repository prefix "` + prefixOfLen(223) + `": too long: 223 characters (normalised "` + prefixOfLen(223) + `"); at most 222 leave room for the 32-character hash`},
		{name: "one-to-one hub namespace too long", repo: strings.Repeat("p", 213),
			wantErr: `repository prefix "` + strings.Repeat("p", 213) + `": too long: 223 characters (normalised "docker.io/` + strings.Repeat("p", 213) + `"); at most 222 leave room for the 32-character hash`},
		{name: "prefix kind longest", kind: Prefix, repo: prefixOfLen(253)},
		{name: "prefix kind too long", kind: Prefix, repo: prefixOfLen(254),
			wantErr: `repository prefix "` + prefixOfLen(254) + `": too long: 254 characters (normalised "` + prefixOfLen(254) + `"); at most 253`},
		{name: "many-to-one bare host", kind: ManyToOne, repo: "registry.corp",
			wantErr: `target repository "registry.corp": names a registry host, not a repository (want e.g. registry.corp/team/app)`},
		{name: "many-to-one bare host and port", kind: ManyToOne, repo: "localhost:5000",
			wantErr: `target repository "localhost:5000": names a registry host, not a repository (want e.g. localhost:5000/team/app)`},
		{name: "many-to-one tag", kind: ManyToOne, repo: "registry.corp/app:1",
			wantErr: `target repository "registry.corp/app:1": must not have a tag`},
		{name: "many-to-one upper case", kind: ManyToOne, repo: "registry.corp/App",
			wantErr: `target repository "registry.corp/App": must be lower case`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind := tc.kind
			if kind == "" && tc.name != "empty kind is one-to-one" {
				kind = OneToOne
			}
			m, err := New(kind, tc.repo)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("New(%q, %q) succeeded; want error %q", kind, tc.repo, tc.wantErr)
				}
				if diff := cmp.Diff(tc.wantErr, err.Error()); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				if !errors.Is(err, ErrInvalidPrefix) {
					t.Errorf("error %v does not wrap ErrInvalidPrefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%q, %q): %v", kind, tc.repo, err)
			}
			wantKind := kind
			if wantKind == "" {
				wantKind = OneToOne
			}
			if m.Kind() != wantKind || m.Repository() != tc.repo {
				t.Errorf("Kind, Repository = %q, %q; want %q, %q", m.Kind(), m.Repository(), wantKind, tc.repo)
			}
		})
	}
}

func TestNewInvalidKind(t *testing.T) {
	t.Parallel()
	_, err := New("sideways", "example.com/user")
	if !errors.Is(err, ErrInvalidKind) {
		t.Fatalf("New with kind sideways: %v; want ErrInvalidKind", err)
	}
}

func TestMapOneToOne(t *testing.T) {
	t.Parallel()
	long := "some.registry.com/some-user/axxxxxxxxx/bxxxxxxxxx/cxxxxxxxxx/dxxxxxxxxx/exxxxxxxxx/fxxxxxxxxx/" +
		"gxxxxxxxxx/hxxxxxxxxx/ixxxxxxxxx/jxxxxxxxxx/kxxxxxxxxx/lxxxxxxxxx/mxxxxxxxxx/nxxxxxxxxx/oxxxxxxxxx/" +
		"pxxxxxxxxx/qxxxxxxxxx/rxxxxxxxxx/sxxxxxxxxx/txxxxxxxxx"
	gcr := "gcr.io/cf-elafros/knative-releases/github.com/knative/serving/cmd/autoscaler"
	for _, tc := range []struct {
		name   string
		prefix string
		src    string
		want   string
	}{
		{name: "docker hub user, tag", prefix: "example.com/user", src: "docker.io/istio/proxyv2:1.2",
			want: "example.com/user/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "familiar name, tag", prefix: "example.com/user", src: "projectriff/builder:v1",
			want: "example.com/user/projectriff-builder-a4a25a99d48adad8310050be267a10ce:v1"},
		{name: "computed hashes agree", prefix: "example.com/user", src: "istio/proxyv2",
			want: "example.com/user/istio-proxyv2-" + md5hex("docker.io/istio/proxyv2")},
		{name: "computed hash projectriff", prefix: "example.com/user", src: "projectriff/builder",
			want: "example.com/user/projectriff-builder-" + md5hex("docker.io/projectriff/builder")},
		{name: "official image", prefix: "example.com/user", src: "nginx",
			want: "example.com/user/library-nginx-" + md5hex("docker.io/library/nginx")},
		{name: "official image, index.docker.io", prefix: "example.com/user", src: "index.docker.io/library/nginx:1.25",
			want: "example.com/user/library-nginx-" + md5hex("docker.io/library/nginx") + ":1.25"},
		{name: "gcr many components, digest", prefix: "example.com/user", src: gcr + "@" + dgstB,
			want: "example.com/user/cf-elafros-knative-releases-github.com-knative-serving-cmd-autoscaler-" + md5hex(gcr) + "@" + dgstB},
		{name: "registry with port", prefix: "example.com/user", src: "localhost:5000/a/b:t",
			want: "example.com/user/a-b-" + md5hex("localhost:5000/a/b") + ":t"},
		{name: "prefix with port", prefix: "localhost:5000/team", src: "docker.io/istio/proxyv2:1.2",
			want: "localhost:5000/team/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "bare host prefix", prefix: "example.com", src: "docker.io/istio/proxyv2:1.2",
			want: "example.com/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "hub namespace prefix is normalised", prefix: "team", src: "docker.io/istio/proxyv2:1.2",
			want: "docker.io/team/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "digest", prefix: "example.com/user", src: "deislabs/duffle@" + dgstA,
			want: "example.com/user/deislabs-duffle-50aa5cc4ebb040ac696a9753d1695298@" + dgstA},
		{name: "tag and digest", prefix: "example.com/user", src: "deislabs/duffle:0.1.0-ralpha.5-englishrose@" + dgstA,
			want: "example.com/user/deislabs-duffle-50aa5cc4ebb040ac696a9753d1695298:0.1.0-ralpha.5-englishrose@" + dgstA},
		{name: "long name needs the --- gap", prefix: "example.com/user", src: long,
			// avail = 255 - len("example.com/user/-") - 32 = 205: 22 components
			// need 229; keeping 17 before the gap needs 198, 18 would need 209.
			want: "example.com/user/some-user-axxxxxxxxx-bxxxxxxxxx-cxxxxxxxxx-dxxxxxxxxx-exxxxxxxxx-fxxxxxxxxx-" +
				"gxxxxxxxxx-hxxxxxxxxx-ixxxxxxxxx-jxxxxxxxxx-kxxxxxxxxx-lxxxxxxxxx-mxxxxxxxxx-nxxxxxxxxx-oxxxxxxxxx-" +
				"pxxxxxxxxx---txxxxxxxxx-" + md5hex(long)},
		{name: "long prefix keeps only the last component", prefix: prefixOfLen(210), src: "istio/proxyv2:1.2",
			// avail = 255 - 210 - 34 = 11: "istio-proxyv2" (13) is too long, "proxyv2" fits.
			want: prefixOfLen(210) + "/proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "prefix so long only the hash fits", prefix: prefixOfLen(222), src: "istio/proxyv2:1.2",
			// avail = -1: nothing fits; P/H is exactly 255 characters.
			want: prefixOfLen(222) + "/f93a2cacc6cafa0474a2d6990a4dd1a0:1.2"},
		{name: "zero room", prefix: prefixOfLen(221), src: "a/b",
			want: prefixOfLen(221) + "/" + md5hex("docker.io/a/b")},
		{name: "exact fit", prefix: prefixOfLen(221 - len("istio-proxyv2")), src: "istio/proxyv2",
			want: prefixOfLen(221-len("istio-proxyv2")) + "/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustNew(t, OneToOne, tc.prefix)
			src := mustParse(t, tc.src)
			got, err := m.Map(src, "")
			if err != nil {
				t.Fatalf("Map(%s): %v", tc.src, err)
			}
			if got.String() != tc.want {
				t.Errorf("Map(%s)\n got %s\nwant %s", tc.src, got, tc.want)
			}
			if len(got.Name()) > reference.NameTotalLengthMax {
				t.Errorf("name %s is %d characters", got.Name(), len(got.Name()))
			}
			// dgst does not change a one-to-one result.
			if got2, err := m.Map(src, dgstB); err != nil || got2.String() != got.String() {
				t.Errorf("Map with dgst = %v, %v; want %s", got2, err, got)
			}
		})
	}
}

// TestOneToOneRepoUpstream holds the expectations of the code duffle runs:
// github.com/pivotal/image-relocation pkg/pathmapping's FlattenRepoPath tests
// (prefix "test.host/testuser"), and duffle's cmd/duffle/relocate_test.go and
// docs/guides/relocation-guide.md (prefix "example.com/user").
func TestOneToOneRepoUpstream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, prefix, src, want string
	}{
		{"single element", "test.host/testuser", "some.registry.com/some-user",
			"test.host/testuser/some-user-9482d6a53a1789fb7304a4fe88362903"},
		{"several elements", "test.host/testuser", "some.registry.com/some-user/some/path",
			"test.host/testuser/some-user-some-path-3236c106420c1d0898246e1d2b6ba8b6"},
		{"tag ignored", "test.host/testuser", "some.registry.com/some-user/some/path:v1",
			"test.host/testuser/some-user-some-path-3236c106420c1d0898246e1d2b6ba8b6"},
		{"tag and digest ignored", "test.host/testuser",
			"some.registry.com/some-user/some/path:v1@sha256:1e725169f37aec55908694840bc808fb13ebf02cb1765df225437c56a796f870",
			"test.host/testuser/some-user-some-path-3236c106420c1d0898246e1d2b6ba8b6"},
		{"long, many elements", "test.host/testuser",
			"some.registry.com/some-user/axxxxxxxxx/bxxxxxxxxx/cxxxxxxxxx/dxxxxxxxxx/" +
				"exxxxxxxxx/fxxxxxxxxx/gxxxxxxxxx/hxxxxxxxxx/ixxxxxxxxx/jxxxxxxxxx/kxxxxxxxxx/lxxxxxxxxx/" +
				"mxxxxxxxxx/nxxxxxxxxx/oxxxxxxxxx/pxxxxxxxxx/qxxxxxxxxx/rxxxxxxxxx/sxxxxxxxxx/txxxxxxxxx",
			"test.host/testuser/some-user-axxxxxxxxx-bxxxxxxxxx-cxxxxxxxxx-dxxxxxxxxx-exxxxxxxxx-fxxxxxxxxx-gxxxxxxxxx-hxxxxxxxxx-ixxxxxxxxx-jxxxxxxxxx-kxxxxxxxxx-lxxxxxxxxx-mxxxxxxxxx-nxxxxxxxxx-oxxxxxxxxx-pxxxxxxxxx---txxxxxxxxx-b0d16e8b4d43f2ec842cfcc61989a966"},
		{"long, few elements", "test.host/testuser",
			"some.registry.com/some-user/axxxxxxxxxabxxxxxxxxxbcxxxxxxxxxcdxxxxxxxxxd" +
				"exxxxxxxxxefxxxxxxxxx/gxxxxxxxxxghxxxxxxxxxhixxxxxxxxxijxxxxxxxxxjkxxxxxxxxxklxxxxxxxxxl" +
				"mxxxxxxxxxmnxxxxxxxxxnoxxxxxxxxxopxxxxxxxxxpqxxxxxxxxxqrxxxxxxxxxrsxxxxxxxxx/txxxxxxxxx",
			"test.host/testuser/some-user-axxxxxxxxxabxxxxxxxxxbcxxxxxxxxxcdxxxxxxxxxdexxxxxxxxxefxxxxxxxxx---txxxxxxxxx-4817a2fce97ff7aae687d14e66328781"},
		{"long, two elements: first alone", "test.host/testuser",
			"some.registry.com/some-user/axxxxxxxxxabxxxxxxxxxbcxxxxxxxxxcdxxxxxxxxxd" +
				"exxxxxxxxxefxxxxxxxxxfgxxxxxxxxxghxxxxxxxxxhixxxxxxxxxijxxxxxxxxxjkxxxxxxxxxklxxxxxxxxxl" +
				"mxxxxxxxxxmnxxxxxxxxxnoxxxxxxxxxopxxxxxxxxxpqxxxxxxxxxqrxxxxxxxxxrsxxxxxxxxxstxxxxxxxxx",
			"test.host/testuser/some-user-a363dc80420c33618202ba2828aec456"},
		{"long, three elements: gap", "test.host/testuser",
			"some.registry.com/some-user/axxxxxxxxxabxxxxxxxxxbcxxxxxxxxxcdxxxxxxxxxd" +
				"exxxxxxxxxefxxxxxxxxxfgxxxxxxxxxghxxxxxxxxxhixxxxxxxxxijxxxxxxxxxjkxxxxxxxxxklxxxxxxxxxl" +
				"mxxxxxxxxxmnxxxxxxxxxnoxxxxxxxxxopxxxxxxxxxpqxxxxxxxxxqrxxxxxxxxxrsxxxxxxxxx/txxxxxxxxx",
			"test.host/testuser/some-user---txxxxxxxxx-5134b4594954926468fe0bdc23f640ef"},
		{"long first element: last alone", "test.host/testuser",
			"some.registry.com/axxxxxxxxxabxxxxxxxxxbcxxxxxxxxxcdxxxxxxxxxd" +
				"exxxxxxxxxefxxxxxxxxxfgxxxxxxxxxghxxxxxxxxxhixxxxxxxxxijxxxxxxxxxjkxxxxxxxxxklxxxxxxxxxl" +
				"mxxxxxxxxxmnxxxxxxxxxnoxxxxxxxxxopxxxxxxxxxpqxxxxxxxxxqrxxxxxxxxxrsxxxxxxxxxstxxxxxxxxx/suffix",
			"test.host/testuser/suffix-3fa7b8289050d7d4fe5d56f3098397a0"},
		{"duffle invocation image", "example.com/user", "technosophos/helloworld:0.1.0",
			"example.com/user/technosophos-helloworld-6731e0d41b7fd5a24e14c853af93bd81"},
		{"duffle guide", "example.com/user", "docker.io/istio/proxyv2",
			"example.com/user/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := oneToOneRepo(tc.prefix, mustParse(t, tc.src)); got != tc.want {
				t.Errorf("oneToOneRepo(%q, %s)\n got %s\nwant %s", tc.prefix, tc.src, got, tc.want)
			}
		})
	}
}

func TestOneToOneRepoNormalises(t *testing.T) {
	t.Parallel()
	// A reference that is not normalised (WithName keeps "istio" as its domain)
	// gets the same name as its normalised form.
	raw, err := reference.WithName("istio/proxyv2")
	if err != nil {
		t.Fatal(err)
	}
	want := "example.com/user/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0"
	if got := oneToOneRepo("example.com/user", raw); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestFit walks every branch of the component fitting, against a direct
// transcription of the rule in docs/design.md.
func TestFit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path  string
		avail int
		want  string
	}{
		{"a/b/cc/d", 8, "a-b-cc-d"},
		{"a/b/cc/d", 7, "a-b---d"},
		{"a/b/cc/d", 6, "a---d"},
		{"a/b/cc/d", 5, "a---d"},
		{"a/b/cc/d", 4, "d"},
		{"a/b/c/d", 7, "a-b-c-d"},
		{"a/b/c/d", 6, "a---d"},
		{"a/b/c/d", 1, "d"},
		{"a/b/c/d", 0, ""},
		{"a/b/c/d", -5, ""},
		{"aaaa/bb/ccccc", 5, "ccccc"},
		{"aaaa/bb/cccccc", 5, "aaaa"}, // last too long alone: the first alone
		{"aaaa/bb/cccccc", 3, ""},
		{"abc", 3, "abc"},
		{"abc", 2, ""},
		{"ab/cd", 5, "ab-cd"},
		{"ab/cd", 4, "cd"},
		{"ab/cdef", 3, "ab"},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.path, tc.avail), func(t *testing.T) {
			if got := fit(tc.path, tc.avail); got != tc.want {
				t.Errorf("fit(%q, %d) = %q, want %q", tc.path, tc.avail, got, tc.want)
			}
			if got := fitReference(tc.path, tc.avail); got != tc.want {
				t.Errorf("fitReference(%q, %d) = %q, want %q", tc.path, tc.avail, got, tc.want)
			}
		})
	}
}

// fitReference is the rule as docs/design.md states it, built with slices and
// strings.Join, to cross-check fit's arithmetic.
func fitReference(path string, avail int) string {
	c := strings.Split(path, "/")
	n := len(c)
	try := [][]string{c}
	for k := n - 1; k >= 1; k-- {
		if k == 1 {
			try = append(try, []string{c[n-1]})
			continue
		}
		try = append(try, append(append(append([]string{}, c[:k-1]...), "-"), c[n-1]))
	}
	try = append(try, []string{c[0]})
	for _, cand := range try {
		if s := strings.Join(cand, "-"); len(s) <= avail {
			return s
		}
	}
	return ""
}

func TestMapPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, prefix, src, want string
	}{
		{"user and tag", "example.com/user", "docker.io/istio/proxyv2:1.2", "example.com/user/istio/proxyv2:1.2"},
		{"official image", "example.com/user", "nginx", "example.com/user/library/nginx"},
		{"deep path, digest", "example.com/user", "gcr.io/a/b/c/d@" + dgstB, "example.com/user/a/b/c/d@" + dgstB},
		{"port, tag and digest", "localhost:5000/team", "quay.io:443/x/y:t@" + dgstA, "localhost:5000/team/x/y:t@" + dgstA},
		{"bare host", "example.com", "istio/proxyv2", "example.com/istio/proxyv2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustNew(t, Prefix, tc.prefix)
			got, err := m.Map(mustParse(t, tc.src), "")
			if err != nil {
				t.Fatalf("Map(%s): %v", tc.src, err)
			}
			if got.String() != tc.want {
				t.Errorf("Map(%s) = %s, want %s", tc.src, got, tc.want)
			}
		})
	}
}

func TestMapPrefixTooLong(t *testing.T) {
	t.Parallel()
	m := mustNew(t, Prefix, prefixOfLen(200))
	src := "example.com/" + strings.Repeat("x", 60) + ":t"
	_, err := m.Map(mustParse(t, src), "")
	if !errors.Is(err, ErrInvalidTarget) {
		t.Fatalf("Map: %v; want ErrInvalidTarget", err)
	}
	if !strings.Contains(err.Error(), src) {
		t.Errorf("error %q does not name the source %s", err, src)
	}
}

func TestMapManyToOne(t *testing.T) {
	t.Parallel()
	m := mustNew(t, ManyToOne, "registry.corp/team/app")
	for _, src := range []string{"nginx:1.25", "istio/proxyv2@" + dgstA, "gcr.io/a/b:t@" + dgstA} {
		t.Run(src, func(t *testing.T) {
			got, err := m.Map(mustParse(t, src), dgstB)
			if err != nil {
				t.Fatal(err)
			}
			if want := "registry.corp/team/app@" + dgstB; got.String() != want {
				t.Errorf("Map(%s) = %s, want %s", src, got, want)
			}
			if _, err := m.Map(mustParse(t, src), ""); !errors.Is(err, ErrDigestRequired) {
				t.Errorf("Map without digest: %v; want ErrDigestRequired", err)
			}
		})
	}
	for _, d := range []digest.Digest{"sha256:abc", "md5:" + digest.Digest(md5hex("x")), "nonsense"} {
		if _, err := m.Map(mustParse(t, "nginx"), d); !errors.Is(err, ErrInvalidTarget) {
			t.Errorf("Map with digest %q: %v; want ErrInvalidTarget", d, err)
		}
	}
	hub := mustNew(t, ManyToOne, "team/app")
	if got, err := hub.Map(mustParse(t, "nginx"), dgstB); err != nil || got.String() != "docker.io/team/app@"+dgstB {
		t.Errorf("hub Map = %v, %v", got, err)
	}
}

func TestMapErrors(t *testing.T) {
	t.Parallel()
	m := mustNew(t, OneToOne, "example.com/user")
	if _, err := m.Map(nil, ""); err == nil {
		t.Error("Map(nil) succeeded")
	}
	var zero Mapping
	if _, err := zero.Map(mustParse(t, "nginx"), ""); err == nil {
		t.Error("zero Mapping Map succeeded")
	}
	if err := zero.Check(nil); err == nil {
		t.Error("zero Mapping Check succeeded")
	}
	// A hub-namespace prefix is normalised after the room is counted, as
	// duffle counted it: a name that then exceeds 255 characters is an error,
	// not a panic (duffle panicked).
	p := strings.Repeat("p", 180)
	hub := mustNew(t, OneToOne, p)
	src := "example.com/" + strings.Repeat("x", 30) + "/y"
	_, err := hub.Map(mustParse(t, src), "")
	if !errors.Is(err, ErrInvalidTarget) || !strings.Contains(err.Error(), src) {
		t.Errorf("Map: %v; want ErrInvalidTarget naming %s", err, src)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	refs := func(ss ...string) []reference.Named {
		var out []reference.Named
		for _, s := range ss {
			out = append(out, mustParse(t, s))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		kind    Kind
		srcs    []reference.Named
		wantErr string
	}{
		{name: "prefix collision", kind: Prefix, srcs: refs("a.io/x/y:1", "c.io/z", "b.io/x/y@"+dgstA),
			wantErr: "source repositories a.io/x/y and b.io/x/y both map to example.com/user/x/y: target repository collision"},
		{name: "prefix, hub and other registry", kind: Prefix, srcs: refs("library/nginx", "quay.io/library/nginx"),
			wantErr: "source repositories docker.io/library/nginx and quay.io/library/nginx both map to example.com/user/library/nginx: target repository collision"},
		{name: "prefix, one repository many spellings", kind: Prefix,
			srcs: refs("nginx", "docker.io/library/nginx:1", "index.docker.io/library/nginx@"+dgstA)},
		{name: "prefix, distinct", kind: Prefix, srcs: refs("a.io/x/y", "a.io/x/z", "b.io/y")},
		{name: "one-to-one, same paths", kind: OneToOne, srcs: refs("a.io/x/y:1", "b.io/x/y", "nginx", "quay.io/library/nginx")},
		{name: "many-to-one never collides", kind: ManyToOne, srcs: refs("a.io/x/y", "b.io/x/y")},
		{name: "empty", kind: OneToOne},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "example.com/user"
			if tc.kind == ManyToOne {
				repo = "example.com/user/app"
			}
			err := mustNew(t, tc.kind, repo).Check(tc.srcs)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrCollision) {
				t.Fatalf("Check: %v\nwant %s (wrapping ErrCollision)", err, tc.wantErr)
			}
		})
	}
}

func TestCheckReportsMapErrors(t *testing.T) {
	t.Parallel()
	m := mustNew(t, Prefix, prefixOfLen(200))
	src := "example.com/" + strings.Repeat("x", 60)
	if err := m.Check([]reference.Named{mustParse(t, "nginx"), mustParse(t, src)}); !errors.Is(err, ErrInvalidTarget) {
		t.Fatalf("Check: %v; want ErrInvalidTarget", err)
	}
}
