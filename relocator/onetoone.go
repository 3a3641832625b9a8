package relocator

import (
	"crypto/md5"
	"encoding/hex"
	"strings"

	"github.com/distribution/reference"
)

// The one-to-one name must equal the one `duffle relocate` gives. Duffle
// (cnabio/duffle cmd/duffle/relocate.go) maps every image with
//
//	pathmapping.FlattenRepoPathPreserveTagDigest(r.repoPrefix, i)
//
// from github.com/pivotal/image-relocation, pinned in duffle's go.mod at
// v0.0.0-20191111101224-e94aff6df06c. Checked against that pkg/pathmapping
// source (this file is a re-implementation, not a copy):
//
//	hasher.Write([]byte(originalImage.Name()))   // normalised name, no tag/digest
//	hash := hex.EncodeToString(hasher.Sum(nil))
//	available := reference.NameTotalLengthMax - len(mappedPath(repoPrefix, "", hash))
//	fp := flatPath(originalImage.Path(), available)
//	if fp == "" { mp = fmt.Sprintf("%s/%s", repoPrefix, hash) } else { mp = mappedPath(repoPrefix, fp, hash) }
//
//	mappedPath: fmt.Sprintf("%s/%s-%s", repoPrefix, repoPath, hash)
//	flatPath:   strings.Join(crunch(strings.Split(repoPath, "/"), size), "-")
//	crunch:     for n := len(components); n > 0; n-- { comp := reduce(components, n);
//	                if len(strings.Join(comp, "-")) <= size { return comp } }
//	            if len(components) > 0 && len(components[0]) <= size { return []string{components[0]} }
//	            return []string{}
//	reduce:     if len(components) < 2 || len(components) <= n { return components }
//	            if n < 2 { return []string{last} }
//	            return append(components[0:n-1], "-", last)
//
// Points where docs/design.md is terse and the code decides:
//   - The hash is over the *normalised* name (image.Name wraps
//     reference.ParseNormalizedNamed): "istio/proxyv2" hashes
//     "docker.io/istio/proxyv2". Confirmed by duffle's relocation guide
//     (istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0) and its relocate_test.go
//     (technosophos-helloworld-6731e0d41b7fd5a24e14c853af93bd81).
//   - The path is everything after the first "/" of that normalised name
//     (image.Name.parseHostPath: strings.SplitN(ref.Name(), "/", 2)), so
//     "library/" stays for official images.
//   - avail uses the prefix exactly as given, not normalised, and the fit
//     test is "<=" (a joined path of exactly avail characters is kept).
//   - k = 1 keeps the last component alone, without a "-" component
//     (reduce's n < 2 branch); a gap shows as "---" only for k >= 2.
//   - avail may be negative (very long prefix): nothing fits, result P/H.
//   - Tag is put back before digest (WithTag, then WithDigest).

// hashLen is the length of the lower-case hex MD5 that ends every one-to-one name.
const hashLen = 2 * md5.Size

// oneToOneRepo is the duffle one-to-one repository name for prefix and the
// repository repo: prefix "/" [flat "-"] md5hex(name), as the package doc
// describes. Any tag or digest of repo is ignored. repo should be normalised
// (as reference.ParseNormalizedNamed returns it); a name that is not, such as
// reference.WithName("istio/proxyv2"), is normalised first. The result is
// neither normalised nor validated: Mapping.Map does both. Tests and
// benchmarks check it against duffle's names.
func oneToOneRepo(prefix string, repo reference.Named) string {
	name := repo.Name()
	if n, err := reference.ParseNormalizedNamed(name); err == nil {
		name = n.Name()
	}
	return oneToOneName(prefix, name)
}

// oneToOneName computes the one-to-one name from a normalised repository
// name (domain "/" path, no tag or digest).
func oneToOneName(prefix, name string) string {
	sum := md5.Sum([]byte(name))
	var hash [hashLen]byte
	hex.Encode(hash[:], sum[:])

	path := name
	if _, p, ok := strings.Cut(name, "/"); ok {
		path = p
	}
	// len(prefix + "/" + "" + "-" + hash)
	avail := reference.NameTotalLengthMax - (len(prefix) + 1 + 1 + hashLen)
	flat := fit(path, avail)

	var b strings.Builder
	b.Grow(len(prefix) + 1 + len(flat) + 1 + hashLen)
	b.WriteString(prefix)
	b.WriteByte('/')
	if flat != "" {
		b.WriteString(flat)
		b.WriteByte('-')
	}
	b.Write(hash[:])
	return b.String()
}

// fit flattens the "/"-separated components of path into one "-"-joined
// string of at most avail bytes, dropping middle components as duffle does:
// all n components; else for k = n-1 down to 2 the first k-1, a "-"
// component and the last; else (k = 1) the last alone; else the first
// alone; else "".
func fit(path string, avail int) string {
	comps := strings.Split(path, "/")
	n := len(comps)
	last := comps[n-1]

	// k = n: everything, n-1 separators.
	if len(path) <= avail { // "/" and "-" have the same length
		return strings.Join(comps, "-")
	}
	// lens[i] = total length of comps[:i].
	sum := 0
	lens := make([]int, n+1)
	for i, c := range comps {
		sum += len(c)
		lens[i+1] = sum
	}
	for k := n - 1; k >= 1; k-- {
		var l int
		if k == 1 {
			l = len(last)
		} else {
			// comps[:k-1], "-", last: k+1 elements, k separators.
			l = lens[k-1] + 1 + len(last) + k
		}
		if l <= avail {
			if k == 1 {
				return last
			}
			var b strings.Builder
			b.Grow(l)
			for _, c := range comps[:k-1] {
				b.WriteString(c)
				b.WriteByte('-')
			}
			b.WriteString("--")
			b.WriteString(last)
			return b.String()
		}
	}
	if len(comps[0]) <= avail {
		return comps[0]
	}
	return ""
}
