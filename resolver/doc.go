// Package resolver builds a containerd [remotes.Resolver] configured the way
// the docker CLI configures itself, so that whatever `docker login` set up
// works unchanged:
//
//   - Credentials come from $DOCKER_CONFIG/config.json or ~/.docker/config.json:
//     "auths" (basic credentials and identity tokens), "credsStore" and
//     per-registry "credHelpers" (docker-credential-NAME on PATH). docker.io
//     and registry-1.docker.io use the key https://index.docker.io/v1/, as the
//     docker CLI does. A credential is only handed to the host that asked for
//     it (the host of the 401 challenge).
//   - TLS is verified with the system roots, plus any [Options.CACerts], plus
//     the CA certificates (*.crt) and client pairs (*.cert/*.key) in
//     /etc/docker/certs.d/HOST/, as docker does.
//   - Loopback hosts (localhost, 127.0.0.0/8, ::1) and the hosts in
//     [Options.Insecure] are tried over HTTPS first and fall back to plain HTTP
//     when the server does not speak TLS. Insecure hosts also skip
//     certificate verification.
//   - Idempotent requests (GET, HEAD, bodiless requests and manifest PUTs)
//     are retried on 408, 429, 5xx and connection errors with exponential
//     backoff and jitter, honouring Retry-After. Streaming blob uploads are
//     not replayable; callers retry those whole.
package resolver
