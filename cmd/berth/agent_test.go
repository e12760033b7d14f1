package main

import (
	"reflect"
	"testing"

	"github.com/berth-dev/berth/internal/agent/server"
)

func TestParseCredential(t *testing.T) {
	for in, want := range map[string]*server.Credential{
		"":                 nil,
		"0:0":              nil,
		"0:0:0,1":          nil,
		"1000:100":         {UID: 1000, GID: 100},
		"65534:65534:27,4": {UID: 65534, GID: 65534, Groups: []uint32{27, 4}},
	} {
		got, err := parseCredential(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseCredential(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"1000", "a:b", "1:2:x", "-1:0", "99999999999:0"} {
		if _, err := parseCredential(bad); err == nil {
			t.Errorf("parseCredential(%q) accepted", bad)
		}
	}
}
