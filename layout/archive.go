package layout

import (
	"archive/tar"
	"bufio"
	"cmp"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
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

// IsArchive reports whether the file at path looks like a thick bundle
// archive: gzip data, or a tar. A directory or a JSON file is not one.
// path may name a split archive (see WriteSplitArchive): its first part,
// or the name the parts have in common when no file has that name; a part
// missing before one that is there is ErrMissingPart.
func IsArchive(path string) (bool, error) {
	parts, err := splitParts(path)
	if err != nil {
		return false, err
	}
	if len(parts) > 1 {
		r := &partsReader{parts: parts}
		defer r.Close()
		br := bufio.NewReader(r)
		if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
			return true, nil
		}
		_, err = tar.NewReader(br).Next()
		return err == nil, nil
	}
	if len(parts) == 1 {
		path = parts[0]
	}
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

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
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
	// extra is one of WriteArchive's extra files.
	extra bool
}

// epoch is the modification time of every archive entry.
var epoch = time.Unix(0, 0).UTC()

// WriteArchive writes a thick bundle archive to path: bundle.json with
// exactly the bytes bundleJSON, and, when layoutDir is not "", the image
// layout in layoutDir (its oci-layout, index.json and blobs; nothing else)
// under artifacts/layout. The archive is deterministic: bundle.json, the
// directories, oci-layout and index.json, then the blobs smallest first
// (manifests and configs before the layers they describe, so that a reader
// of the stream can plan before the layers go by) and by name; all times the Unix epoch, uid and gid 0 without user or group
// names, mode 0644 for files and 0755 for directories, and a gzip header
// without name or time; the same input gives the same bytes. The tar is
// gzipped unless path ends in ".tar" (any case), which gets the same tar
// uncompressed, byte for byte what the gzipped one holds. It is written
// to a temporary file in path's directory and renamed into place; on error
// nothing is left behind. Symbolic links or other special files in the
// layout are an error.
//
// Each of extra is one more file, after index.json and before the blobs:
// a delta's DeltaFile. Its name must be under artifacts/ and outside the
// layout.
func WriteArchive(path string, bundleJSON []byte, layoutDir string, extra ...File) error {
	return writeArchive(path, &fileSink{path: path}, bundleJSON, layoutDir, extra)
}

// File is a small file to put in an archive, by its slash-separated name
// in the archive.
type File struct {
	Name string
	Data []byte
}

// writeArchive writes the archive WriteArchive describes into out, then
// commits it; on error it aborts out.
func writeArchive(path string, out sink, bundleJSON []byte, layoutDir string, extra []File) (err error) {
	defer func() {
		if err != nil {
			out.abort()
		}
	}()
	var layoutFiles []archiveEntry
	if layoutDir != "" {
		if _, err := Open(layoutDir); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if layoutFiles, err = layoutEntries(layoutDir); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	entries, err := archiveEntries(path, bundleJSON, extra, layoutFiles)
	if err != nil {
		return err
	}
	w, closeW, err := compressor(path, out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := writeArchiveEntry(tw, e); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	for _, c := range []func() error{tw.Close, closeW, out.commit} {
		if err := c(); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// compressor is where an archive's tar goes on its way to out: gzip
// unless path names a plain tar, buffered. close ends and flushes it.
func compressor(path string, out io.Writer) (w io.Writer, close func() error, err error) {
	bw := bufio.NewWriterSize(out, 1<<20)
	if plainTar(path) {
		return bw, bw.Flush, nil
	}
	// Image layers are compressed already: the fastest level costs little
	// in size and is several times faster than the default on them.
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return nil, nil, err
	}
	return zw, func() error {
		if err := zw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	}, nil
}

// CompressArchive writes to path the archive whose tar is the file at
// tarPath (a plain-tar archive, as PlaceArchive writes it): gzipped, byte
// for byte what WriteArchive writes to path for the same content, or,
// with split more than 0, the parts WriteSplitArchive writes. It is
// written as WriteArchive and WriteSplitArchive write (temporary files,
// renamed once complete; nothing left on error) and returns the parts, nil
// for one file.
func CompressArchive(tarPath, path string, split int64) (_ []Part, err error) {
	if plainTar(path) {
		return nil, fmt.Errorf("writing %s: a plain tar is not compressed: use PlaceArchive", path)
	}
	if split < 0 {
		return nil, fmt.Errorf("writing %s: split size %d: must be at least 1 byte", path, split)
	}
	in, err := os.Open(tarPath)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	defer in.Close()
	var out sink = &fileSink{path: path}
	var sw *splitWriter
	if split > 0 {
		sw = &splitWriter{path: path, size: split}
		out = sw
	}
	defer func() {
		if err != nil {
			out.abort()
		}
	}()
	w, closeW, err := compressor(path, out)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, in); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	for _, c := range []func() error{closeW, out.commit} {
		if err := c(); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if sw != nil {
		return sw.parts, nil
	}
	return nil, nil
}

// archiveEntries is every entry of an archive, in its order: bundle.json
// (bundleJSON), the extra files and the layout's entries.
func archiveEntries(path string, bundleJSON []byte, extra []File, layoutFiles []archiveEntry) ([]archiveEntry, error) {
	entries := []archiveEntry{{name: BundleFile, data: bundleJSON, size: int64(len(bundleJSON))}}
	for _, f := range extra {
		name, err := entryName(f.Name)
		if err != nil || name != f.Name || !strings.HasPrefix(name, "artifacts/") || strings.HasPrefix(name, LayoutPath+"/") || name == LayoutPath {
			return nil, fmt.Errorf("writing %s: extra file %q: not a file name under artifacts/ outside %s", path, f.Name, LayoutPath)
		}
		entries = append(entries, archiveEntry{name: name, data: f.Data, size: int64(len(f.Data)), extra: true})
	}
	entries = append(entries, layoutFiles...)
	slices.SortFunc(entries, func(a, b archiveEntry) int {
		return cmp.Or(cmp.Compare(entryRank(a), entryRank(b)), cmp.Compare(blobSize(a), blobSize(b)), strings.Compare(a.name, b.name))
	})
	return entries, nil
}

// plainTar reports whether WriteArchive writes an uncompressed tar to path:
// when its name ends in ".tar", in any case.
func plainTar(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".tar")
}

// entryRank orders an archive's entries: bundle.json, directories,
// oci-layout, index.json, extra files, blobs.
func entryRank(e archiveEntry) int {
	switch {
	case e.name == BundleFile:
		return 0
	case e.dir:
		return 1
	case e.name == LayoutPath+"/"+ocispec.ImageLayoutFile:
		return 2
	case e.name == LayoutPath+"/"+ocispec.ImageIndexFile:
		return 3
	case e.extra:
		return 4
	}
	return 5
}

// blobSize is a blob's size, to put small blobs first; 0 for the others.
func blobSize(e archiveEntry) int64 {
	if entryRank(e) == 5 {
		return e.size
	}
	return 0
}

// entryHeader is e's tar header.
func entryHeader(e archiveEntry) *tar.Header {
	hdr := &tar.Header{Name: e.name, ModTime: epoch, Typeflag: tar.TypeReg, Mode: 0o644, Size: e.size}
	if e.dir {
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
	}
	return hdr
}

func writeArchiveEntry(tw *tar.Writer, e archiveEntry) error {
	if err := tw.WriteHeader(entryHeader(e)); err != nil {
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
