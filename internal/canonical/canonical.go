// Package canonical encodes the JSON this project writes (relocation
// mappings, rewritten bundles) one way: compact, object keys sorted bytewise
// at every level, no HTML escaping, numbers as written.
package canonical

import (
	"bytes"
	"encoding/json"
)

// JSON encodes v canonically. Maps are written with sorted keys (as
// encoding/json writes them); a struct's fields in declaration order, so a
// caller that needs every level sorted passes maps (or json.RawMessage of
// canonical JSON).
func JSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
