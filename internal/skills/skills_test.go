package skills

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

const (
	userRoot = "/data/skills"
	roRoot1  = "/data/.agents/skills"
	roRoot2  = "/opt/skills"
)

var threeRoots = Config{UserRoot: userRoot, ReadOnlyRoots: []string{roRoot1, roRoot2}}

func skillText(name, desc string) string {
	return fmt.Sprintf("---\nname: %s\ndescription: %s\n---\n# %s\n\nBody of %s.\n", name, desc, name, name)
}

func addSkill(m *memFS, root, name, desc string) {
	m.addFile(skillPath(root, name), skillText(name, desc))
}

func mustList(t *testing.T, m *memFS, cfg Config) []Skill {
	t.Helper()
	got, err := List(context.Background(), m, cfg)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return got
}

// brief is what tests compare: the fields that say where a skill is and
// how it stands.
func brief(skills []Skill) []string {
	out := make([]string, len(skills))
	for i, s := range skills {
		out[i] = fmt.Sprintf("%s@%s %s", s.Name, s.Root, s.State)
		if s.ShadowedBy != "" {
			out[i] += " by " + s.ShadowedBy
		}
	}
	return out
}

func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestListPrecedenceAcrossThreeRoots(t *testing.T) {
	m := newMemFS()
	addSkill(m, userRoot, "alpha", "user alpha")
	addSkill(m, roRoot1, "alpha", "ro1 alpha")
	addSkill(m, roRoot2, "alpha", "ro2 alpha")
	addSkill(m, roRoot1, "beta", "ro1 beta")
	addSkill(m, roRoot2, "beta", "ro2 beta")
	addSkill(m, roRoot2, "gamma", "ro2 gamma")
	addSkill(m, userRoot, "delta", "user delta")
	// Not skills: hidden, a plain file, a directory without SKILL.md.
	addSkill(m, roRoot1, ".hidden", "hidden")
	m.addFile(roRoot1+"/README.md", "readme")
	m.addDir(roRoot2 + "/notskill/scripts")
	m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":[]}`)

	got := mustList(t, m, threeRoots)
	wantStrings(t, "skills", brief(got), []string{
		"alpha@/data/skills effective",
		"alpha@/data/.agents/skills shadowed by /data/skills",
		"alpha@/opt/skills shadowed by /data/skills",
		"beta@/data/.agents/skills effective",
		"beta@/opt/skills shadowed by /data/.agents/skills",
		"delta@/data/skills effective",
		"gamma@/opt/skills effective",
	})
	want := Skill{Name: "alpha", Description: "user alpha", Root: userRoot, Path: "/data/skills/alpha/SKILL.md", State: StateEffective, Editable: true}
	if got[0] != want {
		t.Errorf("first skill = %+v, want %+v", got[0], want)
	}
	if got[1].Editable || got[1].Description != "ro1 alpha" || got[1].Path != "/data/.agents/skills/alpha/SKILL.md" {
		t.Errorf("read-only copy = %+v", got[1])
	}
	if n := m.mutationCount(); n != 0 {
		t.Errorf("List made %d mutations", n)
	}
}

func TestListRoots(t *testing.T) {
	t.Run("all roots missing", func(t *testing.T) {
		got := mustList(t, newMemFS(), threeRoots)
		if got == nil || len(got) != 0 {
			t.Errorf("List = %#v, want an empty non-nil slice", got)
		}
	})
	t.Run("default roots", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, DefaultUserRoot, "a", "a")
		addSkill(m, DefaultReadOnlyRoot, "b", "b")
		addSkill(m, roRoot2, "c", "c")
		wantStrings(t, "skills", brief(mustList(t, m, Config{})), []string{
			"a@/data/skills effective",
			"b@/data/.agents/skills effective",
		})
		// An empty list means no read-only roots at all.
		wantStrings(t, "skills", brief(mustList(t, m, Config{ReadOnlyRoots: []string{}})), []string{
			"a@/data/skills effective",
		})
	})
	t.Run("unclean roots are cleaned", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, roRoot2, "c", "c")
		got := mustList(t, m, Config{UserRoot: "/data//skills/", ReadOnlyRoots: []string{"/opt/x/../skills"}})
		wantStrings(t, "skills", brief(got), []string{"c@/opt/skills effective"})
	})
	t.Run("a parent of a root is a file", func(t *testing.T) {
		m := newMemFS()
		m.addFile("/opt", "not a directory")
		addSkill(m, userRoot, "a", "a")
		wantStrings(t, "skills", brief(mustList(t, m, threeRoots)), []string{"a@/data/skills effective"})
	})
	t.Run("a root is a file", func(t *testing.T) {
		m := newMemFS()
		m.addFile(roRoot2, "oops")
		_, err := List(context.Background(), m, threeRoots)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "/opt/skills is a file, not a directory") {
			t.Fatalf("List = %v, want a failed precondition naming the root", err)
		}
	})
	t.Run("symlinked root and symlinked skill", func(t *testing.T) {
		m := newMemFS()
		m.addFile("/srv/shared/linked/SKILL.md", skillText("linked", "via a link"))
		m.addLink(roRoot1+"/linked", "../../../srv/shared/linked")
		addSkill(m, "/srv/other", "real", "in a linked root")
		m.addLink(roRoot2, "/srv/other")
		m.addLink(roRoot1+"/dangling", "/nowhere")
		wantStrings(t, "skills", brief(mustList(t, m, threeRoots)), []string{
			"linked@/data/.agents/skills effective",
			"real@/opt/skills effective",
		})
	})
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{UserRoot: "skills"},
		{ReadOnlyRoots: []string{"relative"}},
		{UserRoot: "/"},
		{ReadOnlyRoots: []string{"/data/skills"}},
		{ReadOnlyRoots: []string{"/data/skills/vendor"}},
		{UserRoot: "/data/skills", ReadOnlyRoots: []string{"/data"}},
		{ReadOnlyRoots: []string{"/a", "/a/"}},
	} {
		if _, err := List(context.Background(), newMemFS(), cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("List with %+v = %v, want invalid argument", cfg, err)
		}
	}
}

func TestListReportsUnusableSkills(t *testing.T) {
	m := newMemFS()
	// A broken user copy still counts: it shadows the good read-only one.
	m.addFile(skillPath(userRoot, "broken"), "# no front matter\n")
	addSkill(m, roRoot1, "broken", "good")
	// The front matter names another skill.
	m.addFile(skillPath(roRoot1, "mismatch"), skillText("other", "says other"))
	// A directory name that is not a skill name.
	m.addFile(skillPath(roRoot1, "bad name"), skillText("bad-name", "x"))
	m.addFile(skillPath(roRoot2, "huge"), "---\nname: huge\ndescription: big\n---\n"+strings.Repeat("x\n", MaxSkillBytes/2))
	m.addFile(skillPath(roRoot2, "binary"), "---\nname: binary\ndescription: b\n---\n\x00\x01")
	m.addDir(skillPath(roRoot2, "isdir"))
	m.addFile(skillPath(roRoot2, "unclosed"), "---\nname: unclosed\ndescription: x\n"+strings.Repeat("key: value\n", 200))
	// Front matter past MaxFrontMatterBytes: a long list (parsing it would
	// cost far more memory than its bytes), and one never closed.
	m.addFile(skillPath(roRoot2, "fat"), "---\nname: fat\ndescription: x\nlist:\n"+strings.Repeat("- a\n", MaxFrontMatterBytes/4+1)+"---\nbody\n")
	m.addFile(skillPath(roRoot2, "endless"), "---\nname: endless\ndescription: x\n"+strings.Repeat("- a\n", MaxSkillBytes/8))

	got := mustList(t, m, threeRoots)
	wantStrings(t, "skills", brief(got), []string{
		"bad name@/data/.agents/skills effective",
		"binary@/opt/skills effective",
		"broken@/data/skills effective",
		"broken@/data/.agents/skills shadowed by /data/skills",
		"endless@/opt/skills effective",
		"fat@/opt/skills effective",
		"huge@/opt/skills effective",
		"isdir@/opt/skills effective",
		"mismatch@/data/.agents/skills effective",
		"unclosed@/opt/skills effective",
	})
	wantErr := map[string]string{
		"bad name":  "the directory name is not a valid skill name",
		"binary":    "is not text",
		"broken":    "must start with YAML front matter",
		"huge":      "at most 262144 are allowed",
		"isdir":     "is a directory",
		"mismatch":  `front matter name "other" differs from the directory name "mismatch"`,
		"unclosed":  "not closed",
		"fat":       "front matter is 16419 bytes long; at most 16384 are allowed",
		"endless":   "at most 16384 are allowed",
		"broken#ro": "",
	}
	for _, s := range got {
		key := s.Name
		if s.State == StateShadowed {
			key += "#ro"
		}
		want := wantErr[key]
		if want == "" {
			if s.Error != "" {
				t.Errorf("%s: Error = %q, want none", key, s.Error)
			}
			continue
		}
		if !strings.Contains(s.Error, want) {
			t.Errorf("%s: Error = %q, want it to contain %q", key, s.Error, want)
		}
	}
	// A mismatched name still shows its description.
	for _, s := range got {
		if s.Name == "mismatch" && s.Description != "says other" {
			t.Errorf("mismatch: Description = %q", s.Description)
		}
	}
}

func TestListFailsOnTransportErrors(t *testing.T) {
	m := newMemFS()
	addSkill(m, roRoot1, "a", "a")
	addSkill(m, roRoot1, "b", "b")
	cut := errors.New("connection reset by peer")
	m.readErr[skillPath(roRoot1, "b")] = cut
	if _, err := List(context.Background(), m, threeRoots); !errors.Is(err, cut) {
		t.Fatalf("List = %v, want the transport error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	delete(m.readErr, skillPath(roRoot1, "b"))
	if _, err := List(ctx, m, threeRoots); err == nil {
		t.Fatalf("List with a canceled context succeeded")
	}
}

func TestListCaps(t *testing.T) {
	t.Run("at most MaxSkillsPerRoot, paged", func(t *testing.T) {
		m := newMemFS()
		m.pageSize = 97
		for i := range MaxSkillsPerRoot {
			addSkill(m, roRoot1, fmt.Sprintf("s%04d", i), "x")
		}
		got := mustList(t, m, threeRoots)
		if len(got) != MaxSkillsPerRoot || got[0].Name != "s0000" || got[len(got)-1].Name != "s0999" {
			t.Fatalf("List returned %d skills", len(got))
		}
		addSkill(m, roRoot1, "one-too-many", "x")
		_, err := List(context.Background(), m, threeRoots)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "more than 1000 skill directories") {
			t.Fatalf("List = %v, want a failed precondition about the cap", err)
		}
	})
	t.Run("too many entries of any kind", func(t *testing.T) {
		m := newMemFS()
		for i := range maxRootEntries + 1 {
			m.nodes[fmt.Sprintf("%s/f%05d", roRoot2, i)] = &memNode{kind: "file"}
		}
		m.addDir(roRoot2)
		_, err := List(context.Background(), m, threeRoots)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "10001 entries") {
			t.Fatalf("List = %v, want a failed precondition about the entries", err)
		}
	})
	t.Run("long front matter is read in windows", func(t *testing.T) {
		m := newMemFS()
		text := "---\nname: long\n" + strings.Repeat("# comment\n", 3*headLines) + "description: at the end\n---\nbody\n"
		m.addFile(skillPath(userRoot, "long"), text)
		got := mustList(t, m, threeRoots)
		if len(got) != 1 || got[0].Error != "" || got[0].Description != "at the end" {
			t.Fatalf("List = %+v", got)
		}
	})
}

func TestRead(t *testing.T) {
	m := newMemFS()
	addSkill(m, userRoot, "a", "user a")
	addSkill(m, roRoot1, "a", "ro a")
	addSkill(m, roRoot2, "b", "ro b")
	// More lines than one window of the agent holds.
	long := "---\nname: long\ndescription: many lines\n---\n" + strings.Repeat("l\n", 30000)
	m.addFile(skillPath(roRoot1, "long"), long)
	m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":["b"]}`)
	ctx := context.Background()

	for name, want := range map[string]string{
		"a":    skillText("a", "user a"),
		"b":    skillText("b", "ro b"), // disabled skills can still be read
		"long": long,
	} {
		got, err := Read(ctx, m, threeRoots, name)
		if err != nil || got != want {
			t.Errorf("Read(%q) = %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if _, err := Read(ctx, m, threeRoots, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("Read(nope) = %v, want not found", err)
	}
	if _, err := Read(ctx, m, threeRoots, "../a"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Read(../a) = %v, want invalid argument", err)
	}
	m.addFile(skillPath(roRoot2, "huge"), strings.Repeat("x", MaxSkillBytes+1))
	if _, err := Read(ctx, m, threeRoots, "huge"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Read(huge) = %v, want failed precondition", err)
	}
	if n := m.mutationCount(); n != 0 {
		t.Errorf("Read made %d mutations", n)
	}
}

func TestEnableDisable(t *testing.T) {
	ctx := context.Background()
	m := newMemFS()
	addSkill(m, userRoot, "alpha", "user alpha")
	addSkill(m, roRoot1, "alpha", "ro alpha")
	addSkill(m, roRoot2, "beta", "ro beta")

	s, err := Action(ctx, m, threeRoots, "alpha", ActionDisable)
	if err != nil {
		t.Fatalf("disable: %v", err)
	}
	if s.State != StateDisabled || s.Root != userRoot || !s.Editable {
		t.Errorf("disable returned %+v", s)
	}
	index, _ := m.content(userRoot + "/" + IndexFile)
	if index != "{\n  \"version\": 1,\n  \"disabled\": [\n    \"alpha\"\n  ]\n}\n" {
		t.Errorf("index = %q", index)
	}
	// Disabling is by name: the shadowed copy does not take over.
	wantStrings(t, "after disable", brief(mustList(t, m, threeRoots)), []string{
		"alpha@/data/skills disabled",
		"alpha@/data/.agents/skills shadowed by /data/skills",
		"beta@/opt/skills effective",
	})

	// Doing what is done writes nothing; listing never writes.
	before := m.mutationCount()
	if s, err := Action(ctx, m, threeRoots, "alpha", ActionDisable); err != nil || s.State != StateDisabled {
		t.Errorf("disable again = %+v, %v", s, err)
	}
	if s, err := Action(ctx, m, threeRoots, "beta", ActionEnable); err != nil || s.State != StateEffective {
		t.Errorf("enable of an enabled skill = %+v, %v", s, err)
	}
	mustList(t, m, threeRoots)
	if n := m.mutationCount(); n != before {
		t.Errorf("no-op actions and List made %d mutations", n-before)
	}

	if _, err := Action(ctx, m, threeRoots, "beta", ActionDisable); err != nil {
		t.Fatalf("disable beta: %v", err)
	}
	if s, err := Action(ctx, m, threeRoots, "alpha", ActionEnable); err != nil || s.State != StateEffective {
		t.Fatalf("enable alpha = %+v, %v", s, err)
	}
	wantStrings(t, "after enable", brief(mustList(t, m, threeRoots)), []string{
		"alpha@/data/skills effective",
		"alpha@/data/.agents/skills shadowed by /data/skills",
		"beta@/opt/skills disabled",
	})
	index, _ = m.content(userRoot + "/" + IndexFile)
	if !strings.Contains(index, `"beta"`) || strings.Contains(index, `"alpha"`) {
		t.Errorf("index = %q", index)
	}

	before = m.mutationCount()
	for _, tc := range []struct {
		name, action string
		is           func(error) bool
	}{
		{"nope", ActionEnable, errdefs.IsNotFound},
		{"nope", ActionDisable, errdefs.IsNotFound},
		{"nope", ActionAdopt, errdefs.IsNotFound},
		{"alpha", "remove", errdefs.IsInvalidArgument},
		{"a/b", ActionDisable, errdefs.IsInvalidArgument},
	} {
		if _, err := Action(ctx, m, threeRoots, tc.name, tc.action); !tc.is(err) {
			t.Errorf("Action(%q, %q) = %v", tc.name, tc.action, err)
		}
	}
	if n := m.mutationCount(); n != before {
		t.Errorf("failed actions made %d mutations", n-before)
	}
}

func TestIndex(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, text, want string }{
		{"not JSON", "{", "is not valid JSON"},
		{"wrong shape", `{"disabled":"a"}`, "is not valid JSON"},
		{"two values", `{} {}`, "more than one JSON value"},
		{"newer version", `{"version":2,"disabled":[]}`, "has version 2"},
		{"binary", "\x00", "is unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemFS()
			addSkill(m, roRoot1, "a", "a")
			m.addFile(userRoot+"/"+IndexFile, tc.text)
			_, err := List(ctx, m, threeRoots)
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("List = %v, want a failed precondition containing %q", err, tc.want)
			}
			// An index that cannot be read is never overwritten.
			if _, err := Action(ctx, m, threeRoots, "a", ActionDisable); !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("disable = %v, want a failed precondition", err)
			}
			if got, _ := m.content(userRoot + "/" + IndexFile); got != tc.text {
				t.Fatalf("index rewritten to %q", got)
			}
		})
	}
	t.Run("without version", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, roRoot1, "a", "a")
		m.addFile(userRoot+"/"+IndexFile, `{"disabled":["a"],"comment":"by hand"}`)
		wantStrings(t, "skills", brief(mustList(t, m, threeRoots)), []string{"a@/data/.agents/skills disabled"})
	})
	t.Run("a concurrent update is retried, not lost", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, roRoot1, "a", "a")
		addSkill(m, roRoot1, "b", "b")
		m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":[]}`)
		raced := false
		m.beforeWrite = func(p string) {
			if !raced {
				raced = true
				m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":["b"]}`)
			}
		}
		if _, err := Action(ctx, m, threeRoots, "a", ActionDisable); err != nil {
			t.Fatalf("disable: %v", err)
		}
		wantStrings(t, "skills", brief(mustList(t, m, threeRoots)), []string{
			"a@/data/.agents/skills disabled",
			"b@/data/.agents/skills disabled",
		})
	})
}

func TestAdopt(t *testing.T) {
	ctx := context.Background()
	m := newMemFS()
	addSkill(m, roRoot1, "beta", "ro1 beta")
	m.addFile(roRoot1+"/beta/scripts/run.sh", "#!/bin/sh\necho hi\n")
	addSkill(m, roRoot2, "beta", "ro2 beta")
	m.addFile("/srv/shared/linked/SKILL.md", skillText("linked", "via a link"))
	m.addFile("/srv/shared/linked/ref.md", "reference")
	m.addLink(roRoot2+"/linked", "../../srv/shared/linked")
	addSkill(m, roRoot2, "off", "disabled one")
	addSkill(m, userRoot, "mine", "user skill")
	m.addDir(userRoot + "/leftover")
	addSkill(m, roRoot1, "leftover", "blocked")
	m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":["off"]}`)

	s, err := Action(ctx, m, threeRoots, "beta", ActionAdopt)
	if err != nil {
		t.Fatalf("adopt beta: %v", err)
	}
	want := Skill{Name: "beta", Description: "ro1 beta", Root: userRoot, Path: userRoot + "/beta/SKILL.md", State: StateEffective, Editable: true}
	if s != want {
		t.Errorf("adopt = %+v, want %+v", s, want)
	}
	if got, _ := m.content(userRoot + "/beta/scripts/run.sh"); got != "#!/bin/sh\necho hi\n" {
		t.Errorf("adopted script = %q", got)
	}
	if got, _ := m.content(roRoot1 + "/beta/SKILL.md"); got != skillText("beta", "ro1 beta") {
		t.Errorf("the read-only copy changed: %q", got)
	}

	// A symlinked skill is adopted as a real directory.
	if _, err := Action(ctx, m, threeRoots, "linked", ActionAdopt); err != nil {
		t.Fatalf("adopt linked: %v", err)
	}
	if n := m.nodes[userRoot+"/linked"]; n == nil || n.kind != "dir" {
		t.Errorf("adopted link is %+v, want a directory", n)
	}
	if got, _ := m.content(userRoot + "/linked/ref.md"); got != "reference" {
		t.Errorf("adopted ref.md = %q", got)
	}

	// A disabled skill stays disabled.
	if s, err := Action(ctx, m, threeRoots, "off", ActionAdopt); err != nil || s.State != StateDisabled || !s.Editable {
		t.Errorf("adopt off = %+v, %v", s, err)
	}

	wantStrings(t, "after adopting", brief(mustList(t, m, threeRoots)), []string{
		"beta@/data/skills effective",
		"beta@/data/.agents/skills shadowed by /data/skills",
		"beta@/opt/skills shadowed by /data/skills",
		"leftover@/data/.agents/skills effective",
		"linked@/data/skills effective",
		"linked@/opt/skills shadowed by /data/skills",
		"mine@/data/skills effective",
		"off@/data/skills disabled",
		"off@/opt/skills shadowed by /data/skills",
	})

	before := m.mutationCount()
	for _, name := range []string{"beta", "mine"} {
		if _, err := Action(ctx, m, threeRoots, name, ActionAdopt); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "already a user skill") {
			t.Errorf("adopt %s again = %v, want already exists", name, err)
		}
	}
	if _, err := Action(ctx, m, threeRoots, "leftover", ActionAdopt); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "delete or rename it") {
		t.Errorf("adopt over a leftover directory = %v, want already exists", err)
	}
	if n := m.mutationCount(); n != before {
		t.Errorf("refused adoptions made %d mutations", n-before)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	m := newMemFS()
	addSkill(m, userRoot, "mine", "mine")
	m.addFile(userRoot+"/mine/notes.md", "notes")
	addSkill(m, userRoot, "override", "user override")
	addSkill(m, roRoot1, "override", "read-only original")
	addSkill(m, roRoot2, "vendor", "read-only")
	m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":["mine","override"]}`)

	before := m.mutationCount()
	err := Delete(ctx, m, threeRoots, "vendor")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "read-only skill from /opt/skills") || !strings.Contains(err.Error(), "disable it instead") {
		t.Errorf("Delete(vendor) = %v, want a refusal", err)
	}
	if err := Delete(ctx, m, threeRoots, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("Delete(nope) = %v, want not found", err)
	}
	if err := Delete(ctx, m, threeRoots, ".."); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Delete(..) = %v, want invalid argument", err)
	}
	if n := m.mutationCount(); n != before {
		t.Errorf("refused deletes made %d mutations", n-before)
	}

	if err := Delete(ctx, m, threeRoots, "mine"); err != nil {
		t.Fatalf("Delete(mine): %v", err)
	}
	if m.exists(userRoot+"/mine") || m.exists(userRoot+"/mine/notes.md") {
		t.Errorf("mine is still there")
	}
	// The override goes; the read-only original stays disabled.
	if err := Delete(ctx, m, threeRoots, "override"); err != nil {
		t.Fatalf("Delete(override): %v", err)
	}
	wantStrings(t, "after delete", brief(mustList(t, m, threeRoots)), []string{
		"override@/data/.agents/skills disabled",
		"vendor@/opt/skills effective",
	})
	if index, _ := m.content(userRoot + "/" + IndexFile); index != "{\n  \"version\": 1,\n  \"disabled\": [\n    \"override\"\n  ]\n}\n" {
		t.Errorf("index = %q", index)
	}
}

func TestUpsert(t *testing.T) {
	ctx := context.Background()

	t.Run("writes and updates", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, userRoot, "old", "old text")
		m.addFile(userRoot+"/old/helper.py", "print()")
		addSkill(m, roRoot1, "pdf", "vendor pdf")
		m.addFile(userRoot+"/"+IndexFile, `{"version":1,"disabled":["old"]}`)
		texts := []string{skillText("new", "brand new"), skillText("old", "new text"), skillText("pdf", "my pdf")}
		got, err := Upsert(ctx, m, threeRoots, texts)
		if err != nil {
			t.Fatalf("Upsert: %v", err)
		}
		want := []Skill{
			{Name: "new", Description: "brand new", Root: userRoot, Path: userRoot + "/new/SKILL.md", State: StateEffective, Editable: true},
			{Name: "old", Description: "new text", Root: userRoot, Path: userRoot + "/old/SKILL.md", State: StateDisabled, Editable: true},
			{Name: "pdf", Description: "my pdf", Root: userRoot, Path: userRoot + "/pdf/SKILL.md", State: StateEffective, Editable: true},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Upsert =\n %+v\nwant\n %+v", got, want)
		}
		for i, s := range want {
			if c, _ := m.content(s.Path); c != texts[i] {
				t.Errorf("%s = %q", s.Path, c)
			}
		}
		if c, _ := m.content(userRoot + "/old/helper.py"); c != "print()" {
			t.Errorf("other files of an updated skill changed: %q", c)
		}
		wantStrings(t, "after upsert", brief(mustList(t, m, threeRoots)), []string{
			"new@/data/skills effective",
			"old@/data/skills disabled",
			"pdf@/data/skills effective",
			"pdf@/data/.agents/skills shadowed by /data/skills",
		})
	})

	tooBig := "---\nname: big\ndescription: b\n---\n" + strings.Repeat("x", MaxSkillBytes)
	many := make([]string, MaxUpsert+1)
	for i := range many {
		many[i] = skillText(fmt.Sprintf("s%d", i), "x")
	}
	for _, tc := range []struct {
		name  string
		texts []string
		want  string
	}{
		{"none", nil, "no skills given"},
		{"too many", many, "at most 50"},
		{"one bad among good", []string{skillText("a", "a"), skillText("b", "b"), "no front matter"}, "nothing was written: skill 3: SKILL.md must start with YAML front matter"},
		{"bad name", []string{skillText("a", "a"), skillText(".git", "x")}, "skill 2: front matter name: skill name \".git\" must not start"},
		{"duplicate names", []string{skillText("a", "first"), skillText("a", "second")}, "skill 2: name \"a\" is also the name of skill 1"},
		{"too large", []string{skillText("a", "a"), tooBig}, "skill 2: SKILL.md is"},
		{"several problems", []string{"x", skillText("ok", "ok"), "---\nname: y\n---\n"}, "\"---\"; skill 3: SKILL.md front matter has no description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemFS()
			_, err := Upsert(ctx, m, threeRoots, tc.texts)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Upsert = %v, want invalid argument containing %q", err, tc.want)
			}
			if n := m.mutationCount(); n != 0 {
				t.Errorf("a refused Upsert made %d mutations", n)
			}
		})
	}

	t.Run("exactly the cap", func(t *testing.T) {
		m := newMemFS()
		got, err := Upsert(ctx, m, threeRoots, many[:MaxUpsert])
		if err != nil || len(got) != MaxUpsert {
			t.Fatalf("Upsert of %d = %d, %v", MaxUpsert, len(got), err)
		}
	})

	t.Run("never writes through a symlink into a read-only root", func(t *testing.T) {
		m := newMemFS()
		addSkill(m, roRoot1, "vend", "vendor")
		m.addLink(userRoot+"/vend", "../.agents/skills/vend")
		addSkill(m, roRoot2, "file", "vendor file")
		m.addDir(userRoot + "/file")
		m.addLink(userRoot+"/file/SKILL.md", roRoot2+"/file/SKILL.md")
		m.addLink(userRoot+"/dangling", roRoot2+"/dangling")
		// A link that leads elsewhere is written through.
		m.addDir("/home/bot/mine")
		m.addLink(userRoot+"/mine", "/home/bot/mine")
		for _, name := range []string{"vend", "file", "dangling"} {
			_, err := Upsert(ctx, m, threeRoots, []string{skillText("mine", "mine"), skillText(name, "mine")})
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "nothing was written") || !strings.Contains(err.Error(), "read-only root") {
				t.Errorf("Upsert of %s = %v, want a refusal", name, err)
			}
		}
		if n := m.mutationCount(); n != 0 {
			t.Fatalf("refused Upserts made %d mutations", n)
		}
		if _, err := Upsert(ctx, m, threeRoots, []string{skillText("mine", "mine")}); err != nil {
			t.Fatalf("Upsert through a link elsewhere: %v", err)
		}
		if c, _ := m.content("/home/bot/mine/SKILL.md"); c != skillText("mine", "mine") {
			t.Errorf("linked skill = %q", c)
		}
		// Deleting the linked user copy removes the link only.
		if err := Delete(ctx, m, threeRoots, "vend"); err != nil {
			t.Fatalf("Delete(vend): %v", err)
		}
		if m.exists(userRoot+"/vend") || !m.exists(roRoot1+"/vend/SKILL.md") {
			t.Errorf("Delete of a linked skill went through the link")
		}
	})

	t.Run("a failed write says what was written", func(t *testing.T) {
		m := newMemFS()
		m.addFile(userRoot+"/b", "a file where the skill directory should be")
		got, err := Upsert(ctx, m, threeRoots, []string{skillText("a", "a"), skillText("b", "b"), skillText("c", "c")})
		if err == nil || !strings.Contains(err.Error(), "written before it: a; the rest were not written") {
			t.Fatalf("Upsert = %v", err)
		}
		if len(got) != 1 || got[0].Name != "a" {
			t.Errorf("Upsert returned %+v", got)
		}
	})
}
