package retry

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestOneClassifier fails when a second retry classifier appears in the
// module's non-test Go files, outside this package. It looks for:
//
//  1. a function or method whose name says it classifies errors for a
//     retry (retryable, transient, temporary, shouldRetry, in any case),
//     but for a Temporary method whose whole body is "return
//     retry.Retryable(x)" (resolver.StatusError's);
//  2. a struct field or a composite-literal key named Retryable or
//     ShouldRetry (a hook that would let a caller of Policy, or of
//     anything else, plug in its own classifier), here included;
//  3. a function that names two or more of the transient statuses (408,
//     429, 500, 502, 503, 504, as net/http constants or numbers): a
//     status table of its own. The fault injector of the test kit
//     (internal/testkit/registrytest) is exempt: it makes those statuses.
func TestOneClassifier(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	problems := scan(t, root)
	for _, p := range problems {
		t.Error(p)
	}
}

// TestOneClassifierFindsThem proves the scan sees each kind of second
// classifier.
func TestOneClassifierFindsThem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "fixup"), 0o755)
	os.WriteFile(filepath.Join(dir, "fixup", "engine.go"), []byte(`package fixup

import "net/http"

func retryable(err error) bool { return true }

type policy struct{ Retryable func(error) bool }

var p = policy{Retryable: nil}

func answer(code int) bool {
	switch code {
	case http.StatusTooManyRequests, 503:
		return true
	}
	return false
}

type statusError struct{}

func (e *statusError) Temporary() bool { return true }
`), 0o644)
	got := scan(t, dir)
	for _, want := range []string{"func retryable", "field Retryable", "key Retryable", "answer names 2 transient statuses", "func Temporary"} {
		found := false
		for _, p := range got {
			found = found || strings.Contains(p, want)
		}
		if !found {
			t.Errorf("the scan does not report %q; it reports %q", want, got)
		}
	}
}

var classifierName = regexp.MustCompile(`(?i)retryable|transient|temporary|shouldretry`)

var transientStatuses = map[string]bool{
	"StatusRequestTimeout": true, "StatusTooManyRequests": true, "StatusInternalServerError": true,
	"StatusBadGateway": true, "StatusServiceUnavailable": true, "StatusGatewayTimeout": true,
	"408": true, "429": true, "500": true, "502": true, "503": true, "504": true,
}

func moduleRoot(t *testing.T) string {
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the package")
		}
		dir = parent
	}
}

// scan returns what it finds in the non-test Go files under root.
func scan(t *testing.T, root string) []string {
	var problems []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		inRetry := strings.HasPrefix(rel, "internal/retry/")
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if !inRetry && classifierName.MatchString(n.Name.Name) && !delegates(n) {
					problems = append(problems, rel+": func "+n.Name.Name+" classifies errors for a retry: use retry.Retryable")
				}
				if !inRetry && !strings.HasPrefix(rel, "internal/testkit/registrytest/") && n.Body != nil {
					if k := countStatuses(n.Body); k >= 2 {
						problems = append(problems, rel+": func "+n.Name.Name+" names "+strconv.Itoa(k)+" transient statuses: use retry.Retryable or retry.TransientStatus")
					}
				}
			case *ast.Field:
				for _, name := range n.Names {
					if name.Name == "Retryable" || name.Name == "ShouldRetry" {
						problems = append(problems, rel+": field "+name.Name+" lets a second classifier in")
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && (k.Name == "Retryable" || k.Name == "ShouldRetry") {
					problems = append(problems, rel+": key "+k.Name+" plugs in a second classifier")
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return problems
}

// delegates reports whether fn is a Temporary method whose body is
// "return retry.Retryable(x)".
func delegates(fn *ast.FuncDecl) bool {
	if fn.Recv == nil || fn.Name.Name != "Temporary" || fn.Body == nil || len(fn.Body.List) != 1 {
		return false
	}
	ret, ok := fn.Body.List[0].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 {
		return false
	}
	call, ok := ret.Results[0].(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "retry" && sel.Sel.Name == "Retryable"
}

// countStatuses returns how many distinct transient statuses body names.
func countStatuses(body *ast.BlockStmt) int {
	seen := map[string]bool{}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if pkg, ok := n.X.(*ast.Ident); ok && pkg.Name == "http" && transientStatuses[n.Sel.Name] {
				seen[n.Sel.Name] = true
			}
		case *ast.BasicLit:
			if n.Kind == token.INT && transientStatuses[n.Value] {
				seen[statusName(n.Value)] = true
			}
		}
		return true
	})
	return len(seen)
}

// statusName maps a number to its constant's name, so that 503 and
// http.StatusServiceUnavailable count once.
func statusName(v string) string {
	return map[string]string{
		"408": "StatusRequestTimeout", "429": "StatusTooManyRequests", "500": "StatusInternalServerError",
		"502": "StatusBadGateway", "503": "StatusServiceUnavailable", "504": "StatusGatewayTimeout",
	}[v]
}
