// Package errbody reads the error a registry puts in a response body
// (distribution's {"errors":[{"code","message","detail"}]}).
package errbody

import "encoding/json"

// Parse returns the registry's error in body: the first whose code is not
// UNKNOWN (distribution 2.8 puts UNKNOWN first in some 500s, before the
// code that says why), else the first; detail when it is a string (often
// the digest at fault). All "" when body holds none.
func Parse(body []byte) (code, message, detail string) {
	var b struct {
		Errors []struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Errors) == 0 {
		return "", "", ""
	}
	e := b.Errors[0]
	for _, x := range b.Errors {
		if x.Code != "UNKNOWN" {
			e = x
			break
		}
	}
	var d string
	if json.Unmarshal(e.Detail, &d) != nil {
		d = ""
	}
	return e.Code, e.Message, d
}

// Codes returns the codes of every error in body, in order; nil when body
// holds none.
func Codes(body []byte) []string {
	var b struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &b) != nil {
		return nil
	}
	var codes []string
	for _, e := range b.Errors {
		if e.Code != "" {
			codes = append(codes, e.Code)
		}
	}
	return codes
}
