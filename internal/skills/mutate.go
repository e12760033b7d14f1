package skills

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// Actions of Action.
const (
	ActionEnable  = "enable"
	ActionDisable = "disable"
	ActionAdopt   = "adopt"
)

const (
	// MaxUpsert caps the skills of one Upsert.
	MaxUpsert = 50
	// mutationTimeout bounds a mutation once it has started writing.
	mutationTimeout = 2 * time.Minute
	// maxLinkHops bounds the symlinks followed to find what to adopt.
	maxLinkHops = 8
)

// mutationContext detaches a mutation from its caller's cancellation:
// once writing has begun, stopping halfway (some skills written, a skill
// deleted but still listed as disabled) is worse than finishing.
func mutationContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), mutationTimeout)
}

// Upsert writes each text, a whole SKILL.md, to <UserRoot>/<name>/SKILL.md,
// where name is its front matter name; other files in that directory stay
// as they are. Every text is checked before any is written, and one bad
// text means none is written; so is a name whose user directory or
// SKILL.md is a symlink into a read-only root. It returns the user copies
// written, in the order given, with their states (a disabled name stays
// disabled). A write that fails after others succeeded returns those
// others with the error, which names them.
func Upsert(ctx context.Context, fsys FS, cfg Config, texts []string) ([]Skill, error) {
	roots, err := cfg.roots()
	if err != nil {
		return nil, err
	}
	switch {
	case len(texts) == 0:
		return nil, invalidf("no skills given: pass the full text of at least one SKILL.md")
	case len(texts) > MaxUpsert:
		return nil, invalidf("%d skills given; at most %d can be written at once, so split them into several calls", len(texts), MaxUpsert)
	}
	metas := make([]Meta, len(texts))
	first := map[string]int{}
	var problems []string
	for i, text := range texts {
		meta, _, err := Parse(text)
		if err != nil {
			problems = append(problems, fmt.Sprintf("skill %d: %v", i+1, err))
			continue
		}
		if j, dup := first[meta.Name]; dup {
			problems = append(problems, fmt.Sprintf("skill %d: name %s is also the name of skill %d", i+1, quote(meta.Name), j+1))
			continue
		}
		first[meta.Name] = i
		metas[i] = meta
	}
	if len(problems) > 0 {
		return nil, invalidf("nothing was written: %s", strings.Join(problems, "; "))
	}
	for _, meta := range metas {
		if err := checkWritable(ctx, fsys, roots, meta.Name); err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
	}
	// Read now, so that an unusable index stops the call before anything
	// is written.
	idx, err := readIndex(ctx, fsys, roots[0])
	if err != nil {
		return nil, err
	}

	wctx, cancel := mutationContext(ctx)
	defer cancel()
	out := make([]Skill, 0, len(texts))
	for i, meta := range metas {
		p := skillPath(roots[0], meta.Name)
		if _, err := fsys.Write(wctx, wire.WriteRequest{Path: p, MakeParents: true}, strings.NewReader(texts[i])); err != nil {
			return out, fmt.Errorf("writing skill %s to %s: %w (%s)", quote(meta.Name), p, err, writtenSoFar(out))
		}
		s := Skill{Name: meta.Name, Description: meta.Description, Root: roots[0], Path: p, State: StateEffective, Editable: true}
		if idx.disabled[meta.Name] {
			s.State = StateDisabled
		}
		out = append(out, s)
	}
	return out, nil
}

func writtenSoFar(done []Skill) string {
	if len(done) == 0 {
		return "no skill was written"
	}
	names := make([]string, len(done))
	for i, s := range done {
		names[i] = s.Name
	}
	return "written before it: " + strings.Join(names, ", ") + "; the rest were not written"
}

// Delete removes the user copy of a skill, its whole directory. A skill
// that exists only in read-only roots cannot be deleted (disable it
// instead). Once no copy of the name is left, the name is also dropped
// from the disabled set; while a read-only copy remains it stays disabled,
// so deleting an override never brings back a skill the user turned off.
func Delete(ctx context.Context, fsys FS, cfg Config, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	roots, err := cfg.roots()
	if err != nil {
		return err
	}
	copies, err := lookup(ctx, fsys, roots, name)
	if err != nil {
		return err
	}
	switch {
	case len(copies) == 0:
		return notFound(roots, name)
	case !copies[0].Editable:
		return preconditionf("skill %s is a read-only skill from %s and cannot be deleted; disable it instead", quote(name), copies[0].Root)
	}

	wctx, cancel := mutationContext(ctx)
	defer cancel()
	dir := skillDir(roots[0], name)
	if err := fsys.Delete(wctx, dir, true); err != nil {
		if remoteCode(err) == wire.CodeNotFound {
			return notFound(roots, name)
		}
		return fmt.Errorf("deleting skill %s (%s): %w", quote(name), dir, err)
	}
	if len(copies) > 1 {
		return nil
	}
	if err := updateIndex(wctx, fsys, roots[0], func(disabled map[string]bool) bool {
		if !disabled[name] {
			return false
		}
		delete(disabled, name)
		return true
	}); err != nil {
		return fmt.Errorf("deleted skill %s, but could not drop it from the disabled skills: %w", quote(name), err)
	}
	return nil
}

// Action changes one skill and returns the copy that counts afterwards:
//   - "enable" and "disable" change the name's state in the index
//     (doing what is already done writes nothing);
//   - "adopt" copies the read-only copy that counts, with everything in
//     its directory, into the user root, where it becomes the editable
//     copy that counts. A name that is disabled stays disabled.
func Action(ctx context.Context, fsys FS, cfg Config, name, action string) (Skill, error) {
	switch action {
	case ActionEnable, ActionDisable, ActionAdopt:
	default:
		return Skill{}, invalidf("unknown skill action %s; use %q, %q or %q", quote(action), ActionEnable, ActionDisable, ActionAdopt)
	}
	if err := ValidateName(name); err != nil {
		return Skill{}, err
	}
	roots, err := cfg.roots()
	if err != nil {
		return Skill{}, err
	}
	copies, err := lookup(ctx, fsys, roots, name)
	if err != nil {
		return Skill{}, err
	}
	if len(copies) == 0 {
		return Skill{}, notFound(roots, name)
	}
	top := copies[0]
	if action == ActionAdopt {
		return adopt(ctx, fsys, roots, top)
	}

	disable := action == ActionDisable
	wctx, cancel := mutationContext(ctx)
	defer cancel()
	if err := updateIndex(wctx, fsys, roots[0], func(disabled map[string]bool) bool {
		if disabled[name] == disable {
			return false
		}
		if disable {
			disabled[name] = true
		} else {
			delete(disabled, name)
		}
		return true
	}); err != nil {
		return Skill{}, err
	}
	top.State = StateEffective
	if disable {
		top.State = StateDisabled
	}
	return top, nil
}

func adopt(ctx context.Context, fsys FS, roots []string, top Skill) (Skill, error) {
	name := top.Name
	if top.Editable {
		return Skill{}, existsf("skill %s is already a user skill at %s; edit it there", quote(name), top.Path)
	}
	dst := skillDir(roots[0], name)
	// The user root may hold a directory of that name without a SKILL.md:
	// not a skill, but in the way.
	if fi, err := fsys.Stat(ctx, dst); err == nil {
		return Skill{}, existsf("%s already exists (a %s without %s); delete or rename it, then adopt again", dst, fi.Type, SkillFile)
	} else if remoteCode(err) != wire.CodeNotFound {
		return Skill{}, fmt.Errorf("adopting skill %s: %w", quote(name), err)
	}
	src, err := resolveDir(ctx, fsys, skillDir(top.Root, name))
	if err != nil {
		return Skill{}, err
	}

	wctx, cancel := mutationContext(ctx)
	defer cancel()
	if _, err := fsys.Mkdir(wctx, roots[0], true); err != nil {
		return Skill{}, fmt.Errorf("adopting skill %s: creating %s: %w", quote(name), roots[0], err)
	}
	// The agent copies into a hidden temporary name and renames it into
	// place, so the user root never holds a half copy that would shadow
	// the read-only one.
	if _, err := fsys.Copy(wctx, src, dst, false); err != nil {
		if remoteCode(err) == wire.CodeExists {
			return Skill{}, existsf("%s appeared while adopting skill %s; look at it, then adopt again if it is not the skill", dst, quote(name))
		}
		return Skill{}, fmt.Errorf("adopting skill %s: copying %s to %s: %w", quote(name), src, dst, err)
	}
	copies, err := lookup(wctx, fsys, roots, name)
	if err != nil {
		return Skill{}, err
	}
	if len(copies) == 0 || !copies[0].Editable {
		return Skill{}, fmt.Errorf("adopting skill %s: copied %s to %s, but the copy has no %s", quote(name), src, dst, SkillFile)
	}
	return copies[0], nil
}

// resolveDir follows symlinks from dir to the directory they lead to. The
// agent copies a symlink as a symlink, and a relative link copied into the
// user root would point somewhere else, or nowhere.
func resolveDir(ctx context.Context, fsys FS, dir string) (string, error) {
	p, fi, err := followLinks(ctx, fsys, dir)
	if err != nil {
		return "", fmt.Errorf("adopting %s: %w", dir, err)
	}
	if fi.Type != wire.FileTypeDir {
		return "", preconditionf("cannot adopt %s: %s is a %s, not a directory", dir, p, fi.Type)
	}
	return p, nil
}

// followLinks follows the symlinks at the end of p and describes what
// they lead to. Symlinks in the parents of a link's target are left to
// the agent; this is about the links skill roots are made of (a skill
// directory or a SKILL.md linked in from elsewhere).
func followLinks(ctx context.Context, fsys FS, p string) (string, wire.FileInfo, error) {
	for range maxLinkHops {
		fi, err := fsys.Stat(ctx, p)
		if err != nil {
			return p, wire.FileInfo{}, err
		}
		if fi.Type != wire.FileTypeSymlink {
			return p, fi, nil
		}
		if fi.LinkTarget == "" {
			return p, wire.FileInfo{}, preconditionf("the symlink %s changed while being read; try again", p)
		}
		target := fi.LinkTarget
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = path.Clean(target)
	}
	return p, wire.FileInfo{}, preconditionf("more than %d symlinks lead on from %s", maxLinkHops, p)
}

// checkWritable refuses to write name's SKILL.md in the user root when
// the write would go through a symlink into a read-only root: the agent
// follows symlinks, and berth must not change the skills it only reads.
// The workspace belongs to the bot, so this guards against accidents, not
// against the bot.
func checkWritable(ctx context.Context, fsys FS, roots []string, name string) error {
	dir := skillDir(roots[0], name)
	realDir, _, err := followLinks(ctx, fsys, dir)
	if err := absentIsFine(err); err != nil {
		return err
	}
	if err := outsideReadOnly(roots, name, dir, realDir); err != nil {
		return err
	}
	file := realDir + "/" + SkillFile
	realFile, _, err := followLinks(ctx, fsys, file)
	if err := absentIsFine(err); err != nil {
		return err
	}
	return outsideReadOnly(roots, name, file, realFile)
}

// outsideReadOnly checks that p, which leads to real, does not lead into
// a read-only root.
func outsideReadOnly(roots []string, name, p, real string) error {
	for _, ro := range roots[1:] {
		if within(real, ro) {
			return preconditionf("%s leads through a symlink to %s in the read-only root %s, which berth does not change; delete skill %s (that removes only the link), then adopt it or write it anew", p, real, ro, quote(name))
		}
	}
	return nil
}

// absentIsFine drops the errors that say a path is not there yet, which
// a write creates.
func absentIsFine(err error) error {
	switch remoteCode(err) {
	case wire.CodeNotFound, wire.CodeNotDirectory:
		return nil
	}
	return err
}
