package fixup

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/resolver"
)

// pushManifests pushes j's manifests byte for byte, children first, then,
// when it has referrers, the root by digest (each referrer's subject is in
// the target before the referrer names it), its referrers, each after its
// own subject, and last the root under its name, so that an image found
// present by its tag has its referrers too. Into a target with the
// referrers API, no referrers tag schema index is copied or written: the
// target lists each referrer by its subject itself.
func (e *engine) pushManifests(ctx context.Context, j *job) error {
	if j.refresh {
		// The image is in place: its referrers' subjects are there.
		return e.pushReferrers(ctx, j, j.root.Digest)
	}
	manifests := j.graph.manifests
	root := manifests[len(manifests)-1]
	for _, m := range manifests[:len(manifests)-1] {
		if err := e.putManifest(ctx, j, m, "", false); err != nil {
			return err
		}
	}
	if len(j.refs) > 0 {
		if err := e.putManifest(ctx, j, root, "", false); err != nil {
			return err
		}
		if err := e.pushReferrers(ctx, j, root.desc.Digest); err != nil {
			return err
		}
	}
	return e.putManifest(ctx, j, root, "", true)
}

// pushReferrers pushes j's referrers, whose subjects are all in the target
// (subject is one of them, for asking the target whether it has the
// referrers API), and makes those found without a tag findable in a
// target without the API.
func (e *engine) pushReferrers(ctx context.Context, j *job, subject digest.Digest) error {
	bestEffort := e.c.opts.Referrers.BestEffort
	api, err := e.dst.referrersAPI(ctx, j.dest(), subject)
	if err != nil {
		err = e.targetErr(j, "asking for the referrers API", err)
		if !bestEffort || ctx.Err() != nil {
			return err
		}
		// Not knowing, index as for a target without the API: a tag too many
		// beats a referrer nobody finds.
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j.dest()), Err: err})
	}
	if api {
		e.c.logger.Debug("the target has the referrers API: no referrers tag schema index", "image", j.img.Ref, "target", e.dst.display(j.dest()))
	}
	for _, r := range j.refs {
		if err := e.pushReferrer(ctx, j, r, api); err != nil {
			if !bestEffort || ctx.Err() != nil {
				return err
			}
			e.c.logger.Warn("referrer not copied", "image", j.img.Ref, "referrer", r.Desc.Digest, "err", err)
			e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: r.Desc.Digest, Err: err})
		}
	}
	if api {
		return nil
	}
	if err := e.indexReferrers(ctx, j); err != nil {
		if !bestEffort || ctx.Err() != nil {
			return err
		}
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j.dest()), Err: err})
	}
	return nil
}

// pushReferrer pushes a referrer's manifests with j's image, under its tag
// when it has one. Into a target with the referrers API (api), a referrers
// tag schema index is not pushed, only the artifacts it lists: the target
// lists them by their subject.
func (e *engine) pushReferrer(ctx context.Context, j *job, r referrerGraph, api bool) error {
	ms := r.graph.manifests
	results := referrerResults(r)
	dropIndex := api && results[0].Index
	if dropIndex {
		ms, results = ms[:len(ms)-1], results[1:]
	}
	for i, m := range ms {
		tag := ""
		if i == len(ms)-1 && !dropIndex {
			tag = r.Tag
		}
		if err := e.putManifest(ctx, j, m, tag, false); err != nil {
			return err
		}
	}
	j.mu.Lock()
	j.res.Referrers = append(j.res.Referrers, results...)
	j.mu.Unlock()
	if !dropIndex {
		e.emit(Event{Kind: ReferrerCopied, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: r.Desc.Digest, Size: r.Desc.Size})
		return nil
	}
	for _, x := range results {
		e.emit(Event{Kind: ReferrerCopied, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: x.Digest, Size: sizeOf(r.graph, x.Digest)})
	}
	return nil
}

// sizeOf is the size of manifest d of g, or 0.
func sizeOf(g *graph, d digest.Digest) int64 {
	for _, m := range g.manifests {
		if m.desc.Digest == d {
			return m.desc.Size
		}
	}
	return 0
}

// indexReferrers makes j's referrers found without a tag findable in the
// target (see target.referrerIndexes).
func (e *engine) indexReferrers(ctx context.Context, j *job) error {
	idx, err := e.dst.referrerIndexes(ctx, j.dest(), untagged(j.refs))
	if err != nil {
		return e.targetErr(j, "indexing referrers", err)
	}
	for _, t := range idx {
		if err := e.putManifest(ctx, j, t.n, t.tag, false); err != nil {
			return err
		}
	}
	return nil
}

// untagged are the referrers of refs found without a tag.
func untagged(refs []referrerGraph) []untaggedReferrer {
	var out []untaggedReferrer
	for _, r := range refs {
		if r.Tag == "" {
			out = append(out, untaggedReferrer{subject: r.subject, desc: r.Desc, artifactType: r.artifactType})
		}
	}
	return out
}

// putManifest pushes one manifest, retried whole.
func (e *engine) putManifest(ctx context.Context, j *job, n node, tag string, root bool) error {
	what := "manifest " + n.desc.Digest.String()
	var pushed bool
	err := e.policy.Do(ctx, what+" to "+e.dst.describe(j.host)+" "+j.repo, func(int) error {
		var err error
		pushed, err = e.dst.putManifest(ctx, j.dest(), n, tag, root)
		return resolver.TypedError(err)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return e.targetErr(j, "pushing "+what, e.sparseErr(j, n, e.foreignErr(n, err)))
	}
	if pushed {
		e.emit(Event{Kind: ManifestPushed, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: n.desc.Digest, Size: n.desc.Size})
	}
	return nil
}
