package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"1", 1, ""},
		{"1048576", 1 << 20, ""},
		{"512KiB", 512 << 10, ""},
		{"700MiB", 700 << 20, ""},
		{"4GiB", 4 << 30, ""},
		{"4gib", 4 << 30, ""},
		{"1TiB", 1 << 40, ""},
		{"4GB", 4e9, ""},
		{"4.7GB", 4.7e9, ""},
		{"1.5KiB", 1536, ""},
		{"700 MB", 700e6, ""},
		{"100B", 100, ""},
		{"0", 0, "at least 1 byte"},
		{"0MiB", 0, "at least 1 byte"},
		{"-1", 0, "at least 1 byte"},
		{"-1GiB", 0, "at least 1 byte"},
		{"1.5", 0, "whole number"},
		{"0.1B", 0, "whole number"},
		{"", 0, "not a size"},
		{"GiB", 0, "not a size"},
		{"4G", 0, "not a size"},
		{"4 GiBs", 0, "not a size"},
		{"1e9", 0, "not a size"},
		{"0x10", 0, "not a size"},
		{"NaN", 0, "not a size"},
		{"Inf", 0, "not a size"},
		{"+5", 0, "not a size"},
		{"99999999999TiB", 0, "too big"},
		{"9999999999999999999", 0, "too big"},
		{"1.2.3MiB", 0, "not a size"},
		{".", 0, "not a size"},
	} {
		got, err := parseSize(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseSize(%q) = %d, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}
