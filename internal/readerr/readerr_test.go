package readerr

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReader(t *testing.T) {
	t.Parallel()
	r := &Reader{R: strings.NewReader("abc")}
	if b, err := io.ReadAll(r); err != nil || string(b) != "abc" || r.Err != nil {
		t.Errorf("a whole read: %q, %v, kept %v; want abc, nil, nil", b, err, r.Err)
	}
	boom := errors.New("boom")
	r = &Reader{R: io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(boom))}
	if _, err := io.ReadAll(r); err != boom || r.Err != boom {
		t.Errorf("a failed read: %v, kept %v; want %v both", err, r.Err, boom)
	}
}
