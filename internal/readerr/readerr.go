// Package readerr keeps the error of a reader that a consumer (an HTTP
// client sending it as a request body, say) reports as its own.
package readerr

import "io"

// Reader reads from R and keeps its first error other than io.EOF in Err,
// so that the caller can tell the source's failure from the consumer's.
type Reader struct {
	R   io.Reader
	Err error
}

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	if err != nil && err != io.EOF && r.Err == nil {
		r.Err = err
	}
	return n, err
}
