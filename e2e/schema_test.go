package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	canon "github.com/cnabio/cnab-relocate/internal/canonical"
)

// testdataDir is the repository's testdata/ (cnab-spec, real-bundles), found
// from this package's directory.
func testdataDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join("..", "testdata")
	if st, err := os.Stat(filepath.Join(d, "cnab-spec")); err != nil || !st.IsDir() {
		t.Fatalf("testdata/cnab-spec not found in the repository (%s): %v", d, err)
	}
	return d
}

// validate checks the JSON file at path against a CNAB schema from
// testdata/cnab-spec/schema. References resolve locally; nothing is fetched.
func validate(t testing.TB, schema, path string) {
	t.Helper()
	dir := filepath.Join(testdataDir(t), "cnab-spec", "schema")
	c := jsonschema.NewCompiler()
	for _, name := range []string{"bundle.schema.json", "definitions.schema.json", "relocation-mapping.schema.json"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.AddResource("https://cnab.io/v1/"+name, doc); err != nil {
			t.Fatal(err)
		}
	}
	sch, err := c.Compile("https://cnab.io/v1/" + schema)
	if err != nil {
		t.Fatalf("compiling %s: %v", schema, err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inst, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s is not valid against %s: %v", path, schema, err)
	}
}

// canonical re-encodes JSON in the canonical form: compact, keys sorted.
func canonical(t testing.TB, data []byte) string {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	out, err := canon.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
