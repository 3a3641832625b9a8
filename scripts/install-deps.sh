#!/usr/bin/env bash
# install-deps.sh installs what the end-to-end tests and benchmarks need on a Debian machine (the
# demo needs none of it: it runs on go-containerregistry's registry in its own process): the CNCF
# distribution registry 2.8 (Debian package docker-registry) and distribution v3.1.2 (built with
# go install, about 90 s the first time), which internal/testkit/registrytest starts on random 127.0.0.1
# ports with its own configuration, skopeo, tmux (the real terminal of the display test), the
# oras CLI and cosign. (go-containerregistry's registry, the third implementation the tests run, is built
# from this module by the tests.)
#
# It is idempotent: when /usr/bin/docker-registry is already there it only makes sure the packaged
# service (which listens on :5000) is not running, which is fast and needs no network.
set -euo pipefail

REGISTRY_BIN=/usr/bin/docker-registry

# as_root runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "install-deps: need root (or sudo) to run: $*" >&2
		return 1
	fi
}

# skopeo writes OCI layouts independently of us: e2e relocates a thick bundle
# made from its layout. tmux is the real terminal e2e runs the progress display in.
missing=()
[ -x "$REGISTRY_BIN" ] || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}" >&2
	as_root apt-get update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The package ships a service on :5000 that may have started on install. Tests never use it:
# stop and disable it, ignoring every error (no systemd in a container, service not running, ...).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	as_root systemctl disable --now docker-registry >/dev/null 2>&1 || true
else
	if [ -f /var/run/docker-registry.pid ] && command -v service >/dev/null 2>&1; then
		as_root service docker-registry stop >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
	fi
fi

if [ ! -x "$REGISTRY_BIN" ]; then
	echo "install-deps: $REGISTRY_BIN is still missing after installing docker-registry" >&2
	exit 1
fi

# distribution v3, where registrytest looks for it: $REGISTRY_V3_BIN, else GOPATH's bin.
V3_VERSION=v3.1.2
V3_BIN="${REGISTRY_V3_BIN:-$(go env GOPATH)/bin/registry}"
if ! { [ -x "$V3_BIN" ] && "$V3_BIN" --version 2>/dev/null | grep -q "distribution/v3 $V3_VERSION"; }; then
	echo "install-deps: building distribution $V3_VERSION into $(dirname "$V3_BIN") (about 90 s)" >&2
	mkdir -p "$(dirname "$V3_BIN")"
	GOBIN="$(dirname "$V3_BIN")" go install "github.com/distribution/distribution/v3/cmd/registry@$V3_VERSION"
	if [ "$(basename "$V3_BIN")" != registry ]; then
		mv "$(dirname "$V3_BIN")/registry" "$V3_BIN"
	fi
fi
# The oras CLI, which e2e asks to discover relocated referrers (through the referrers API and the
# tag schema) as a client kept by others would: $ORAS_BIN, else GOPATH's bin, built with go install
# from the Go module proxy when missing (about 30 s the first time).
ORAS_VERSION=v1.3.6
ORAS_BIN="${ORAS_BIN:-$(go env GOPATH)/bin/oras}"
if ! { [ -x "$ORAS_BIN" ] && "$ORAS_BIN" version 2>/dev/null | grep -q "${ORAS_VERSION#v}"; }; then
	echo "install-deps: building oras $ORAS_VERSION into $(dirname "$ORAS_BIN")" >&2
	mkdir -p "$(dirname "$ORAS_BIN")"
	GOBIN="$(dirname "$ORAS_BIN")" go install "oras.land/oras/cmd/oras@$ORAS_VERSION"
	if [ "$(basename "$ORAS_BIN")" != oras ]; then
		mv "$(dirname "$ORAS_BIN")/oras" "$ORAS_BIN"
	fi
fi

# cosign, which e2e asks to sign images at the source and verify them after a --platform
# relocation, offline (a key pair, no transparency log): $COSIGN_BIN, else GOPATH's bin, built with
# go install from the Go module proxy when missing (a few minutes the first time: it is large).
COSIGN_VERSION=v2.4.1
COSIGN_BIN="${COSIGN_BIN:-$(go env GOPATH)/bin/cosign}"
if ! { [ -x "$COSIGN_BIN" ] && "$COSIGN_BIN" version 2>/dev/null | grep -q "${COSIGN_VERSION}"; }; then
	echo "install-deps: building cosign $COSIGN_VERSION into $(dirname "$COSIGN_BIN")" >&2
	mkdir -p "$(dirname "$COSIGN_BIN")"
	GOBIN="$(dirname "$COSIGN_BIN")" go install "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
	if [ "$(basename "$COSIGN_BIN")" != cosign ]; then
		mv "$(dirname "$COSIGN_BIN")/cosign" "$COSIGN_BIN"
	fi
fi

echo "install-deps: ok ($("$REGISTRY_BIN" --version 2>/dev/null || echo "$REGISTRY_BIN"); $("$V3_BIN" --version 2>/dev/null || echo "$V3_BIN"))"
