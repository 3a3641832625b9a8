package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cnabio/cnab-relocate/fixup"
)

// output is a file to write with writeFiles.
type output struct {
	Path string
	Data []byte
}

// checkOutputs fails early, before any copying, when an output cannot be
// written: its directory is missing or is not a directory, or it would
// overwrite an input. Errors wrap ErrInvalidInput and name the path.
func checkOutputs(inputs []string, outputs ...string) error {
	for _, out := range outputs {
		if out == "" {
			continue
		}
		dir := filepath.Dir(out)
		st, err := os.Stat(dir)
		if err != nil {
			return asInput(fmt.Errorf("%w %s: directory %s: %v", fixup.ErrOutput, out, dir, errors.Unwrap(err)))
		}
		if !st.IsDir() {
			return asInput(fmt.Errorf("%w %s: %s is not a directory", fixup.ErrOutput, out, dir))
		}
		if ost, err := os.Stat(out); err == nil && ost.IsDir() {
			return asInput(fmt.Errorf("%w %s: is a directory", fixup.ErrOutput, out))
		}
		for _, in := range inputs {
			if same(in, out) {
				return asInput(fmt.Errorf("%w %s: is also the input; write the output elsewhere", fixup.ErrOutput, out))
			}
		}
	}
	for i, a := range outputs {
		for _, b := range outputs[i+1:] {
			if a != "" && same(a, b) {
				return asInput(fmt.Errorf("%w %s: given for two outputs", fixup.ErrOutput, a))
			}
		}
	}
	return nil
}

func same(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// writeFiles writes every output or none: each goes to a temporary file in
// its own directory, then all are renamed into place. On failure the
// temporary files are removed, and outputs already renamed are removed too.
func writeFiles(outs ...output) (err error) {
	var temps []string
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}()
	for _, o := range outs {
		t, err := writeTemp(o)
		if err != nil {
			return err
		}
		temps = append(temps, t)
	}
	for i, o := range outs {
		if err := os.Rename(temps[i], o.Path); err != nil {
			for _, done := range outs[:i] {
				os.Remove(done.Path)
			}
			return fmt.Errorf("%w %s: %v", fixup.ErrOutput, o.Path, err)
		}
		temps[i] = ""
	}
	return nil
}

func writeTemp(o output) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(o.Path), "."+filepath.Base(o.Path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", fixup.ErrOutput, o.Path, err)
	}
	name := f.Name()
	_, err = f.Write(o.Data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, 0o644)
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("%w %s: %v", fixup.ErrOutput, o.Path, err)
	}
	return name, nil
}

// asInput marks err as bad input (exit 2).
func asInput(err error) error { return inputErr{err} }
