// Package resolver builds a containerd [remotes.Resolver] configured the way
// the docker CLI configures itself, so that whatever `docker login` set up
// works unchanged:
//
//   - Credentials come from $DOCKER_CONFIG/config.json or ~/.docker/config.json:
//     "auths" (basic credentials and identity tokens), "credsStore" and
//     per-registry "credHelpers" (docker-credential-NAME on PATH). docker.io
//     and registry-1.docker.io use the key https://index.docker.io/v1/, as the
//     docker CLI does. Keys may be written HOST[:PORT], https://HOST[:PORT] or
//     with a path (the docker CLI matches "auths" so; "credHelpers" here too).
//     Identity tokens are sent to the token realm as OAuth2 refresh tokens.
//     Credentials are read once per host and run.
//   - A credential is only sent to the host (host:port) it belongs to: the
//     host of the 401 challenge, or the token realm that host named. A
//     redirect to another host carries that host's own credentials or none
//     (net/http alone forwards them to another port of the same host name).
//   - Authentication failures are *AuthError values naming the host, the user
//     and where the credentials came from (config.json or a helper).
//   - TLS is verified with the system roots, plus any [Options.CACerts], plus
//     the CA certificates (*.crt) and client pairs (*.cert/*.key) in
//     /etc/docker/certs.d/HOST[:PORT]/, as docker does. TLS settings belong
//     to the host a request is sent to: a token realm or a redirect target
//     gets its own, never those of the registry that named it (an insecure
//     registry does not make its storage host insecure). A certificate that
//     does not verify is not retried.
//   - Loopback hosts (localhost, 127.0.0.0/8, ::1) and the hosts in
//     [Options.Insecure] are tried over HTTPS first and fall back to plain HTTP
//     when the server does not speak TLS. Insecure hosts also skip
//     certificate verification.
//   - Bodiless requests (GET, HEAD, POST to start an upload) and token
//     requests are retried on 408, 429, 5xx and connection errors, at most
//     Retries times, with exponential backoff and jitter, honouring
//     Retry-After. A transient status the transport does not retry becomes
//     a *StatusError, so containerd never replays a request itself. Blob
//     and manifest PUTs stream through a pipe and are never replayed;
//     callers retry them whole (fixup does).
//   - A registry's answer with a status the caller did not ask for is one
//     [*StatusError] (host, status, the registry's error codes, message),
//     made where the response is read; [TypedError] makes the same of
//     what containerd's remotes report.
//   - Beyond containerd's resolver, [Resolver] lists tags and asks the OCI
//     1.1 referrers API, with the same hosts, TLS and credentials, and
//     pushes with fewer requests than containerd's pusher:
//     [Resolver.PushBlob] (no HEAD before a blob) and
//     [Resolver.PushManifest] (none before a manifest).
package resolver
