package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/resolver"
)

// registryFlags are the flags every command that reaches registries takes.
type registryFlags struct {
	insecure  []string
	caCerts   []string
	configDir string
	retries   int
	debug     bool
	// logger, set by setOutput, takes the debug records with --debug.
	logger *slog.Logger
}

func (r *registryFlags) add(fs *pflag.FlagSet) {
	fs.StringArrayVar(&r.insecure, "insecure-registry", nil, "allow plain HTTP or unverified TLS for `HOST[:PORT]` or CIDR (repeatable; loopback hosts fall back to HTTP without it)")
	fs.StringArrayVar(&r.caCerts, "ca-cert", nil, "trust the CA certificates in this PEM `FILE` too (repeatable)")
	fs.StringVar(&r.configDir, "docker-config", "", "docker CLI configuration `DIR` for credentials (default $DOCKER_CONFIG or ~/.docker)")
	fs.IntVar(&r.retries, "retries", fixup.DefaultRetries, "retries of a failed request or blob transfer, with exponential backoff")
	fs.BoolVar(&r.debug, "debug", false, "print each request to a registry and its answer on stderr (never a credential)")
}

// setOutput directs the --debug records to stderr.
func (r *registryFlags) setOutput(stderr io.Writer) {
	if r.debug {
		r.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

func (r *registryFlags) resolverOptions() resolver.Options {
	return resolver.Options{
		ConfigDir: r.configDir,
		CACerts:   r.caCerts,
		Insecure:  r.insecure,
		Retries:   &r.retries,
		Logger:    r.logger,
	}
}

// client is the library's options for these flags, passed through as given.
// Events are per call (the progress display hears of the bundle's images,
// not of a pushed bundle's own artifact).
func (r *registryFlags) client(jobs int, refs fixup.ReferrerOptions) fixup.ClientOptions {
	return fixup.ClientOptions{
		ResolverOptions: r.resolverOptions(),
		Jobs:            jobs,
		Retries:         &r.retries,
		Referrers:       refs,
		Logger:          r.logger,
	}
}

// clientOnce returns the command's one client, made when it is first
// needed: a whole command (pull a bundle, relocate, push a bundle) shares
// its resolver, so the docker config is read once and every registry has
// one transport; a dry run, which needs no client, reads no config.
func clientOnce(opts fixup.ClientOptions) func() (*fixup.Client, error) {
	return sync.OnceValues(func() (*fixup.Client, error) { return fixup.NewClient(opts) })
}

// referrerFlags select the signatures, SBOMs and attestations that travel
// with their images.
type referrerFlags struct {
	off        bool
	types      []string
	bestEffort bool
	refresh    bool // fixup only: --refresh-referrers
}

func (r *referrerFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&r.off, "no-referrers", false, "do not copy the artifacts that refer to each image (signatures, SBOMs, attestations)")
	fs.StringArrayVar(&r.types, "referrers-only-type", nil, "copy only referrers of this artifact `MEDIATYPE` (repeatable)")
	fs.BoolVar(&r.bestEffort, "referrers-best-effort", false, "report a referrer that cannot be copied instead of failing its image")
}

func (r *referrerFlags) options() fixup.ReferrerOptions {
	return fixup.ReferrerOptions{Disabled: r.off, Types: r.types, BestEffort: r.bestEffort, Refresh: r.refresh}
}

// platformFlags select the platforms of each index that travel.
type platformFlags struct {
	platforms []string
}

func (p *platformFlags) add(fs *pflag.FlagSet) {
	fs.StringSliceVar(&p.platforms, "platform", nil, "copy only this `OS/ARCH[/VARIANT]` of each index, which is kept byte for byte (repeatable, or comma-separated; default all platforms)")
}

// parse returns the platforms given, or an error naming the one that is
// not os/arch[/variant].
func (p *platformFlags) parse() ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, s := range p.platforms {
		pl, err := platforms.Parse(s)
		if err != nil || strings.Count(s, "/") == 0 {
			return nil, fmt.Errorf("--platform %q: want OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8", s)
		}
		out = append(out, pl)
	}
	return out, nil
}
