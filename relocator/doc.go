// Package relocator maps image references to relocated image references:
// where an image goes when a bundle is relocated. It is pure functions over
// names; it does no I/O.
//
// A Mapping is made by New from a Kind and a repository (a prefix P, or for
// many-to-one the single target repository) and maps each source reference
// with Map. Check finds two source repositories that would share a target.
//
// # Grammar
//
// Every source reference is first normalised with docker's rules
// (reference.ParseNormalizedNamed): "istio/proxyv2:1.2" is
// "docker.io/istio/proxyv2:1.2", "nginx" is "docker.io/library/nginx". Then,
// with N the normalised name (no tag, no digest), path the part of N after
// its registry host, and tag and digest those of the source:
//
//	prefix      := [domain-and-port "/"] path-component ["/" path-component]*
//	             | domain-and-port
//	                 (lower case; no tag, digest, empty component or trailing "/")
//
//	one-to-one  := prefix "/" [flat "-"] hash [":" tag] ["@" digest]
//	hash        := lower-case hex MD5 of N (32 characters)
//	flat        := fitted path components joined with "-"
//
//	prefix-map  := prefix "/" path [":" tag] ["@" digest]
//
//	many-to-one := repository "@" root-digest
//
// One-to-one is the name `duffle relocate` gives, character for character.
// The room for flat is avail = 255 - len(prefix + "/" + "" + "-" + hash), with
// prefix exactly as given. Of the n path components c1 ... cn, flat is the
// first of these whose length is at most avail:
//
//	c1-c2-...-cn                  all of them
//	c1-...-c(k-1)---cn            for k = n-1 down to 2 (a gap shows as "---")
//	cn                            (k = 1) the last alone
//	c1                            the first alone
//
// and when none fits, flat is empty and the name is prefix "/" hash. For
// example, with prefix example.com/user:
//
//	docker.io/istio/proxyv2:1.2  ->  example.com/user/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2
//	nginx                        ->  example.com/user/library-nginx-<md5("docker.io/library/nginx")>
//
// Because the hash covers the whole normalised name and ends the result,
// distinct source repositories get distinct target repositories, and the
// mapping commutes with tags and digests: if x maps to y then x:t maps to y:t,
// x@d to y@d and x:t@d to y:t@d.
//
// Prefix keeps the source's repository path under P (docker.io/istio/proxyv2
// becomes P/istio/proxyv2, nginx becomes P/library/nginx). Two sources with
// the same path on different registries collide; Check reports it.
//
// Many-to-one puts every image into one repository by its root digest, as
// cnab-to-oci's fixup does; tags are dropped and Map needs the digest.
//
// A prefix whose first component has no "." or ":" and is not "localhost" is
// a Docker Hub namespace, as docker reads it: "team" gives docker.io/team/....
// A bare registry host ("registry.corp", "localhost:5000") is a valid prefix.
//
// Every reference Map returns parses with reference.ParseNormalizedNamed and
// has a name of at most 255 characters.
package relocator
