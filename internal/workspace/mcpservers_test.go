package workspace

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestMCPServerSpecValidate(t *testing.T) {
	ok := MCPServerSpec{Name: "web-search", Command: "npx", Args: []string{"-y", "@x/server"}, Env: map[string]string{"API_KEY": "k"}}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	long := strings.Repeat("a", maxMCPArgLen+1)
	for name, mutate := range map[string]func(*MCPServerSpec){
		"underscore in name":          func(s *MCPServerSpec) { s.Name = "web_search" },
		"upper-case name":             func(s *MCPServerSpec) { s.Name = "Web" },
		"trailing dash":               func(s *MCPServerSpec) { s.Name = "web-" },
		"name too long":               func(s *MCPServerSpec) { s.Name = strings.Repeat("a", maxMCPServerNameLen+1) },
		"no command":                  func(s *MCPServerSpec) { s.Command = " " },
		"NUL in arg":                  func(s *MCPServerSpec) { s.Args = []string{"a\x00b"} },
		"long arg":                    func(s *MCPServerSpec) { s.Args = []string{long} },
		"too many args":               func(s *MCPServerSpec) { s.Args = make([]string, maxMCPArgs+1) },
		"bad env name":                func(s *MCPServerSpec) { s.Env = map[string]string{"A-B": "x"} },
		"NUL in cwd":                  func(s *MCPServerSpec) { s.Cwd = "/data\x00" },
		"empty name":                  func(s *MCPServerSpec) { s.Name = "" },
		"inner double dash (allowed)": nil,
	} {
		t.Run(name, func(t *testing.T) {
			s := ok
			if mutate == nil {
				s.Name = "a--b"
				if err := s.validate(); err != nil {
					t.Errorf("%q refused: %v", s.Name, err)
				}
				return
			}
			mutate(&s)
			if err := s.validate(); !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want an invalid-argument error", err)
			}
		})
	}
}
