package skills

import (
	"path"
	"strings"
)

// Defaults and fixed names.
const (
	DefaultUserRoot     = "/data/skills"
	DefaultReadOnlyRoot = "/data/.agents/skills"
	// SkillFile is the file that makes a directory a skill.
	SkillFile = "SKILL.md"
	// IndexFile is the index's name in the user root. It starts with a
	// dot, like every name that is not a skill.
	IndexFile = ".index.json"
)

// Config says where skills live in a workspace.
type Config struct {
	// UserRoot holds the skills berth writes; "" means DefaultUserRoot.
	UserRoot string
	// ReadOnlyRoots hold skills berth only reads, in precedence order
	// after UserRoot. Nil means [DefaultReadOnlyRoot]; an empty non-nil
	// slice means none, which is what a config file's "[]" decodes to.
	ReadOnlyRoots []string
}

// roots returns the user root followed by the read-only roots, all clean
// and absolute.
func (c Config) roots() ([]string, error) {
	user := c.UserRoot
	if user == "" {
		user = DefaultUserRoot
	}
	ro := c.ReadOnlyRoots
	if ro == nil {
		ro = []string{DefaultReadOnlyRoot}
	}
	all := make([]string, 0, 1+len(ro))
	for _, r := range append([]string{user}, ro...) {
		if !path.IsAbs(r) || strings.IndexByte(r, 0) >= 0 {
			return nil, invalidf("skill root %s must be an absolute path", quote(r))
		}
		r = path.Clean(r)
		if r == "/" {
			return nil, invalidf("skill root must not be \"/\"")
		}
		// A root inside another would make a skill directory a root as
		// well, and the same files would be two skills.
		for _, prev := range all {
			if within(r, prev) || within(prev, r) {
				return nil, invalidf("skill roots %s and %s overlap; each root must be a separate directory", prev, r)
			}
		}
		all = append(all, r)
	}
	return all, nil
}

// within reports whether p is dir or below it; both are clean and
// absolute.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func skillDir(root, name string) string  { return root + "/" + name }
func skillPath(root, name string) string { return root + "/" + name + "/" + SkillFile }
func indexPath(userRoot string) string   { return userRoot + "/" + IndexFile }
