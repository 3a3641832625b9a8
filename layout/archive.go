package layout

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Paths inside a thick bundle archive.
const (
	// BundleFile is the bundle, at the root of the archive.
	BundleFile = "bundle.json"
	// LayoutPath is the directory of the image layout in the archive.
	LayoutPath = "artifacts/layout"
	// MappingFile is the CNAB relocation mapping (Core 103) that porter
	// archive writes beside bundle.json: where the images were when they
	// were put in the layout, whose names are the mapped references.
	MappingFile = "relocation-mapping.json"
)

// maxBundleSize bounds what is read into memory for bundle.json.
const maxBundleSize = 64 << 20

// Thick is an extracted thick bundle.
type Thick struct {
	// BundleJSON is bundle.json, byte for byte.
	BundleJSON []byte
	// RelocationMapping is relocation-mapping.json at the root of the
	// archive, byte for byte, nil when there is none (see MappingFile).
	RelocationMapping []byte
	// Layout is the image layout of artifacts/layout, nil when the archive
	// has none.
	Layout *Store
	// Dir is the temporary directory the archive was extracted to.
	Dir string
}

// Close removes the directory the archive was extracted to. Layout must
// not be used afterwards. Close is idempotent.
func (t *Thick) Close() error {
	if t == nil || t.Dir == "" {
		return nil
	}
	err := os.RemoveAll(t.Dir)
	t.Dir = ""
	return err
}

// IsArchive reports whether the file at path looks like a thick bundle
// archive: gzip data, or a tar. A directory or a JSON file is not one.
func IsArchive(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !st.Mode().IsRegular() {
		return false, nil
	}
	var magic [2]byte
	n, err := io.ReadFull(f, magic[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return false, err
	}
	if n == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return true, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	_, err = tar.NewReader(f).Next()
	return err == nil, nil
}

// ReadArchive extracts the thick bundle archive at path (gzipped tar, or
// plain tar) into a new directory under os.TempDir, streaming, and returns
// its bundle.json and, when the archive has artifacts/layout, its image
// layout. Only regular files and directories with relative names free of
// ".." are accepted; links, devices, fifos and sparse files are rejected
// (ErrUnsafeEntry).
// Errors about the archive wrap ErrInvalidArchive and name path and, where
// there is one, the entry; on any error the directory is removed. The
// caller must Close the result. Blobs are checked against their digests
// when fetched from Layout, not here.
func ReadArchive(ctx context.Context, path string) (_ *Thick, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, path, unwrapPath(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, path, unwrapPath(err))
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file", ErrInvalidArchive, path)
	}
	return readArchive(ctx, path, f)
}

// readArchive extracts the archive read from r; path names it in errors.
// The directory is made when the first entry needs it, so that garbage
// costs nothing on disk.
func readArchive(ctx context.Context, path string, r io.Reader) (_ *Thick, err error) {
	var dir string
	mkdir := func() (string, error) {
		if dir == "" {
			d, err := os.MkdirTemp("", "cnab-relocate-thick-*")
			if err != nil {
				return "", fmt.Errorf("extracting %s: %w", path, err)
			}
			dir = d
		}
		return dir, nil
	}
	defer func() {
		if err != nil && dir != "" {
			os.RemoveAll(dir)
		}
	}()
	if err := extract(ctx, path, r, mkdir); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w %s: no %s at the root of the archive", ErrInvalidArchive, path, BundleFile)
	}

	t := &Thick{Dir: dir}
	bundlePath := filepath.Join(dir, BundleFile)
	st, err := os.Lstat(bundlePath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w %s: no %s at the root of the archive", ErrInvalidArchive, path, BundleFile)
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%w %s: %s is not a regular file", ErrInvalidArchive, path, BundleFile)
	case st.Size() > maxBundleSize:
		return nil, fmt.Errorf("%w %s: %s is %d bytes, more than the %d allowed", ErrInvalidArchive, path, BundleFile, st.Size(), maxBundleSize)
	}
	if t.BundleJSON, err = os.ReadFile(bundlePath); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	mappingPath := filepath.Join(dir, MappingFile)
	st, err = os.Lstat(mappingPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%w %s: %s is not a regular file", ErrInvalidArchive, path, MappingFile)
	case st.Size() > maxBundleSize:
		return nil, fmt.Errorf("%w %s: %s is %d bytes, more than the %d allowed", ErrInvalidArchive, path, MappingFile, st.Size(), maxBundleSize)
	default:
		if t.RelocationMapping, err = os.ReadFile(mappingPath); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}

	layoutDir := filepath.Join(dir, filepath.FromSlash(LayoutPath))
	st, err = os.Lstat(layoutDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	case !st.IsDir():
		return nil, fmt.Errorf("%w %s: %s is not a directory", ErrInvalidArchive, path, LayoutPath)
	}
	s, err := Open(layoutDir)
	if err != nil {
		// Name the file inside the archive, not in the temporary directory.
		msg := strings.ReplaceAll(err.Error(), layoutDir, LayoutPath)
		return nil, fmt.Errorf("%w %s: %s", ErrInvalidArchive, path, msg)
	}
	t.Layout = s
	return t, nil
}

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// extract writes the entries of the archive read from r into the
// directory mkdir makes (on first use); archive names it in errors.
func extract(ctx context.Context, archive string, r io.Reader, mkdir func() (string, error)) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidArchive, archive, fmt.Sprintf(format, args...))
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var src io.Reader = br
	var zr *gzip.Reader
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		var err error
		if zr, err = gzip.NewReader(br); err != nil {
			return bad("corrupt gzip data: %v", readError(err))
		}
		defer zr.Close()
		src = zr
	}
	tr := tar.NewReader(src)
	files := map[string]bool{}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return bad("empty archive, or not a tar archive")
			}
			break
		}
		if err != nil {
			if n == 0 && zr == nil {
				return bad("neither gzip nor tar data")
			}
			return bad("%v", readError(err))
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return fmt.Errorf("%w %s: entry %q: %w", ErrInvalidArchive, archive, hdr.Name, err)
		}
		unsafe := func(what string) error {
			return fmt.Errorf("%w %s: entry %q: %w: %s", ErrInvalidArchive, archive, hdr.Name, ErrUnsafeEntry, what)
		}
		var target string
		if name != "" && (hdr.Typeflag == tar.TypeDir || hdr.Typeflag == tar.TypeReg) {
			dir, err := mkdir()
			if err != nil {
				return err
			}
			target = filepath.Join(dir, filepath.FromSlash(name))
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "" {
				continue
			}
			if files[name] {
				return bad("entry %q: a directory where a file was", hdr.Name)
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return bad("entry %q: %v", hdr.Name, unwrapPath(err))
			}
		case tar.TypeReg:
			if sparse(hdr) {
				// A few bytes could stand for terabytes of holes.
				return unsafe("a sparse file")
			}
			if name == "" {
				return bad("entry %q: a file without a name", hdr.Name)
			}
			if files[name] {
				return bad("entry %q: duplicate file", hdr.Name)
			}
			files[name] = true
			if err := writeEntry(tr, target); err != nil {
				var re *entryReadError
				if errors.As(err, &re) {
					return bad("entry %q: %v", hdr.Name, readError(re.err))
				}
				if conflict(err) {
					return bad("entry %q: %v", hdr.Name, unwrapPath(err))
				}
				return fmt.Errorf("extracting %s: entry %q: %w", archive, hdr.Name, err)
			}
		case tar.TypeSymlink:
			return unsafe(fmt.Sprintf("a symbolic link (to %q)", hdr.Linkname))
		case tar.TypeLink:
			return unsafe(fmt.Sprintf("a hard link (to %q)", hdr.Linkname))
		case tar.TypeChar, tar.TypeBlock:
			return unsafe("a device")
		case tar.TypeFifo:
			return unsafe("a fifo")
		case tar.TypeXGlobalHeader:
			// PAX global header (git archive writes one): no file.
		default:
			return unsafe(fmt.Sprintf("type %q is not a regular file or directory", hdr.Typeflag))
		}
	}
	if zr != nil {
		// Read to the end of the gzip stream, so that its checksum and
		// length are checked.
		if _, err := io.Copy(io.Discard, zr); err != nil {
			return bad("%v", readError(err))
		}
	}
	return nil
}

// sparse reports whether hdr is a GNU sparse file in PAX form, which the
// tar reader expands, holes and all, to its full size.
func sparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// conflict reports whether err, from creating an entry, comes from the
// archive's own tree (a file where a directory is, a name too long) rather
// than from the local file system (no space, no permission).
func conflict(err error) bool {
	return errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTDIR) ||
		errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENAMETOOLONG) ||
		errors.Is(err, syscall.EINVAL)
}

// entryReadError marks a failure to read an entry's content (as opposed to
// writing it out).
type entryReadError struct{ err error }

func (e *entryReadError) Error() string { return e.err.Error() }
func (e *entryReadError) Unwrap() error { return e.err }

type readSide struct {
	r   io.Reader
	err error
}

func (r *readSide) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// writeEntry writes the current entry's content to a new file at target.
func writeEntry(r io.Reader, target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	rs := &readSide{r: r}
	_, err = io.Copy(f, rs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rs.err != nil {
		return &entryReadError{rs.err}
	}
	return err
}

// readError explains errors from reading a tar or gzip stream.
func readError(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("truncated: unexpected end of data")
	case errors.Is(err, gzip.ErrChecksum):
		return errors.New("corrupt: gzip checksum mismatch")
	case errors.Is(err, gzip.ErrHeader):
		return errors.New("corrupt: invalid gzip header")
	case errors.Is(err, tar.ErrHeader):
		return errors.New("corrupt: invalid tar header")
	}
	return fmt.Errorf("corrupt: %w", err)
}

// entryName checks an entry name and returns it cleaned, slash-separated
// and relative ("" for the root directory itself).
func entryName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty name", ErrUnsafeEntry)
	case strings.ContainsRune(name, 0):
		return "", fmt.Errorf("%w: NUL in name", ErrUnsafeEntry)
	case strings.Contains(name, `\`):
		return "", fmt.Errorf("%w: backslash in name", ErrUnsafeEntry)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: absolute name", ErrUnsafeEntry)
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return "", fmt.Errorf("%w: name has a \"..\" element", ErrUnsafeEntry)
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	if !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", fmt.Errorf("%w: name is not local", ErrUnsafeEntry)
	}
	return clean, nil
}

// archiveEntry is a file or directory to put in an archive.
type archiveEntry struct {
	name string // slash-separated; directories end in "/"
	src  string // file to copy, "" for data or a directory
	data []byte
	size int64
	dir  bool
}

// epoch is the modification time of every archive entry.
var epoch = time.Unix(0, 0).UTC()

// WriteArchive writes a thick bundle archive to path: bundle.json with
// exactly the bytes bundleJSON, and, when layoutDir is not "", the image
// layout in layoutDir (its oci-layout, index.json and blobs; nothing else)
// under artifacts/layout. The archive is deterministic: entries sorted by
// name, all times the Unix epoch, uid and gid 0 without user or group
// names, mode 0644 for files and 0755 for directories, and a gzip header
// without name or time; the same input gives the same bytes. It is written
// to a temporary file in path's directory and renamed into place; on error
// nothing is left behind. Symbolic links or other special files in the
// layout are an error.
func WriteArchive(path string, bundleJSON []byte, layoutDir string) (err error) {
	entries := []archiveEntry{{name: BundleFile, data: bundleJSON, size: int64(len(bundleJSON))}}
	if layoutDir != "" {
		if _, err := Open(layoutDir); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		more, err := layoutEntries(layoutDir)
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		entries = append(entries, more...)
	}
	slices.SortFunc(entries, func(a, b archiveEntry) int { return strings.Compare(a.name, b.name) })

	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	// Image layers are compressed already: the fastest level costs little
	// in size and is several times faster than the default on them.
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if err := writeArchiveEntry(tw, e); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	for _, c := range []func() error{tw.Close, zw.Close, bw.Flush, f.Sync, f.Close} {
		if err := c(); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func writeArchiveEntry(tw *tar.Writer, e archiveEntry) error {
	hdr := &tar.Header{Name: e.name, ModTime: epoch, Typeflag: tar.TypeReg, Mode: 0o644, Size: e.size}
	if e.dir {
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	switch {
	case e.dir:
		return nil
	case e.src == "":
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	if n, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("%s: %w", e.src, err)
	} else if n != e.size {
		return fmt.Errorf("%s: changed while it was archived (%d bytes, was %d)", e.src, n, e.size)
	}
	return nil
}

// layoutEntries lists the layout files of dir (oci-layout, index.json,
// blobs/...) as archive entries under LayoutPath.
func layoutEntries(dir string) ([]archiveEntry, error) {
	entries := []archiveEntry{{name: "artifacts/", dir: true}, {name: LayoutPath + "/", dir: true}}
	for _, name := range []string{ocispec.ImageLayoutFile, ocispec.ImageIndexFile} {
		p := filepath.Join(dir, name)
		st, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", p)
		}
		entries = append(entries, archiveEntry{name: LayoutPath + "/" + name, src: p, size: st.Size()})
	}
	blobs := filepath.Join(dir, ocispec.ImageBlobsDir)
	err := filepath.WalkDir(blobs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == blobs && errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipDir
			}
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := LayoutPath + "/" + filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			entries = append(entries, archiveEntry{name: name + "/", dir: true})
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			entries = append(entries, archiveEntry{name: name, src: p, size: info.Size()})
		default:
			return fmt.Errorf("%s is not a regular file or directory", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}
