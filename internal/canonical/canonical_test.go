package canonical

import "testing"

func TestJSON(t *testing.T) {
	t.Parallel()
	got, err := JSON(map[string]any{"b": "<&>", "a": map[string]any{"z": 1, "y": []any{2.5, "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"y":[2.5,"x"],"z":1},"b":"<&>"}`; string(got) != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}
}
