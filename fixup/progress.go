package fixup

import (
	"io"
)

// sourceReader says which side failed: its read errors (but io.EOF) are
// source errors.
type sourceReader struct {
	io.ReadCloser
	wrap func(error) error
}

func (r sourceReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = r.wrap(err)
	}
	return n, err
}

// progress reports bytes in steps of at least 1 MiB.
type progress struct {
	pending int64
	flush   func(int64)
}

func (p *progress) add(n int) {
	p.pending += int64(n)
	if p.pending >= 1<<20 {
		p.flush(p.pending)
		p.pending = 0
	}
}

// done reports what is left.
func (p *progress) done() {
	if p.pending > 0 {
		p.flush(p.pending)
		p.pending = 0
	}
}

// progressWriter reports the bytes written.
type progressWriter struct {
	w io.Writer
	progress
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.add(n)
	return n, err
}

// progressReader reports the bytes read.
type progressReader struct {
	io.ReadCloser
	progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	p.add(n)
	return n, err
}
