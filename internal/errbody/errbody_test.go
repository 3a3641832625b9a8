package errbody

import "testing"

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body                  string
		code, message, detail string
	}{
		{`{"errors":[{"code":"UNKNOWN","message":"unknown error"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}`, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", "sha256:ab"},
		{`{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{}}]}`, "UNKNOWN", "unknown error", ""},
		{`{"errors":[{"code":"DENIED","message":"no"}]}`, "DENIED", "no", ""},
		{`not json`, "", "", ""},
		{`{"errors":[]}`, "", "", ""},
	} {
		code, message, detail := Parse([]byte(tc.body))
		if code != tc.code || message != tc.message || detail != tc.detail {
			t.Errorf("Parse(%s) = %q %q %q, want %q %q %q", tc.body, code, message, detail, tc.code, tc.message, tc.detail)
		}
	}
}
