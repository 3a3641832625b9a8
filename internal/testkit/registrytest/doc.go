// Package registrytest runs the real CNCF distribution registry 2.8 (the Debian package
// docker-registry, /usr/bin/docker-registry) for end-to-end tests and benchmarks, and seeds it
// with images through the Registry HTTP API V2. StartMemory serves go-containerregistry's
// registry in-process instead, for unit tests and the demo, which need nothing installed.
//
// Start (for tests) and StartProcess (for programs) launch one registry process per call, with its
// own configuration, storage and log under a fresh temporary directory, listening on a random
// port of 127.0.0.1, optionally over TLS (a CA made in-process) and behind htpasswd (Basic) auth.
// The registry binary is $REGISTRY_BIN, else /usr/bin/docker-registry; when it is missing, Start
// fails the test (it never skips): run scripts/install-deps.sh.
//
// Client pushes blobs, manifests and whole images (ImageSpec: single-platform manifests, OCI
// indexes and Docker manifest lists, with deterministic random layers) with plain net/http, and
// reads manifests back with HEAD and GET. Proxy sits in front of a registry and counts requests
// by kind, so tests can prove how much work a copy did; optionally it also delays every request
// (ProxyOptions.Latency) and injects faults (ProxyOptions.Faults).
//
// What distribution 2.8 requires of a client, and what this package therefore does:
//   - blob uploads are POST then PUT ?digest= (a single POST with a body is not supported);
//   - an index or manifest list is accepted only once its child manifests are in the same
//     repository, so children are pushed first, by digest;
//   - manifest PUTs carry the manifest's media type as Content-Type, and manifest GETs and HEADs
//     send an Accept header listing all four manifest types (without OCI types an OCI manifest is
//     a 404; without Accept a schema2 manifest fetched by tag is converted to schema1).
package registrytest
