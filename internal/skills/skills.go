package skills

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/agent/wire"
)

// States of a Skill; see the package documentation.
const (
	StateEffective = "effective"
	StateShadowed  = "shadowed"
	StateDisabled  = "disabled"
)

const (
	// MaxSkillsPerRoot caps the skill directories of one root. A listing
	// of a larger root fails rather than answering with an arbitrary part.
	MaxSkillsPerRoot = 1000
	// maxRootEntries caps everything in a root, skills or not, so that a
	// root full of other files fails fast instead of being paged through.
	maxRootEntries = 10 * MaxSkillsPerRoot
	// loadConcurrency bounds the SKILL.md reads a listing has in flight:
	// enough to hide the round trips to the agent, few enough not to
	// crowd out other calls to the same workspace.
	loadConcurrency = 8
)

// Skill is one copy of a skill in one root.
type Skill struct {
	// Name is the skill's directory name, which is its identity.
	Name        string `json:"name"`
	Description string `json:"description"`
	Root        string `json:"root"`
	// Path is the SKILL.md.
	Path  string `json:"path"`
	State string `json:"state"`
	// ShadowedBy is the root of the copy that counts, for a shadowed
	// copy.
	ShadowedBy string `json:"shadowed_by,omitempty"`
	// Editable says the copy is in the user root.
	Editable bool `json:"editable"`
	// Error says why the copy is unusable; such a copy is listed, not
	// hidden.
	Error string `json:"error,omitempty"`
}

// List returns every skill in every root (a missing root is empty),
// sorted by name and then precedence, with their states. It never writes.
func List(ctx context.Context, fsys FS, cfg Config) ([]Skill, error) {
	roots, err := cfg.roots()
	if err != nil {
		return nil, err
	}
	idx, err := readIndex(ctx, fsys, roots[0])
	if err != nil {
		return nil, err
	}
	var cands []candidate
	for rank, root := range roots {
		names, err := listRoot(ctx, fsys, root)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			cands = append(cands, candidate{root: root, name: name, rank: rank})
		}
	}
	found, err := loadAll(ctx, fsys, cands)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(found, func(a, b ranked) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.rank, b.rank))
	})
	out := make([]Skill, len(found))
	for i, f := range found {
		out[i] = f.Skill
	}
	assignStates(out, idx.disabled)
	return out, nil
}

// candidate is a directory that may be a skill.
type candidate struct {
	root, name string
	rank       int
}

type ranked struct {
	Skill
	rank int
}

// assignStates sets State and ShadowedBy of skills sorted by name and
// precedence.
func assignStates(skills []Skill, disabled map[string]bool) {
	for i := range skills {
		s := &skills[i]
		s.ShadowedBy = ""
		switch {
		case i > 0 && skills[i-1].Name == s.Name:
			s.State = StateShadowed
			if skills[i-1].ShadowedBy != "" {
				s.ShadowedBy = skills[i-1].ShadowedBy
			} else {
				s.ShadowedBy = skills[i-1].Root
			}
		case disabled[s.Name]:
			s.State = StateDisabled
		default:
			s.State = StateEffective
		}
	}
}

// listRoot returns the names in root that may be skills: directories and
// symlinks (a root often links skills in from elsewhere), except hidden
// ones, which is where the index and the agent's temporary copies live.
func listRoot(ctx context.Context, fsys FS, root string) ([]string, error) {
	var names []string
	offset := 0
	for {
		res, err := fsys.List(ctx, wire.ListRequest{Path: root, Offset: offset, Limit: wire.ListMaxLimit})
		switch code := remoteCode(err); {
		case code == wire.CodeNotFound:
			return nil, nil
		case code == wire.CodeNotDirectory:
			return nil, checkNotDirectory(ctx, fsys, root)
		case code == wire.CodeLimit:
			return nil, preconditionf("skill root %s has too many entries; at most %d skills per root are supported", root, MaxSkillsPerRoot)
		case err != nil:
			return nil, fmt.Errorf("listing skill root %s: %w", root, err)
		}
		if res.Total > maxRootEntries {
			return nil, preconditionf("skill root %s has %d entries; at most %d entries and %d skills per root are supported", root, res.Total, maxRootEntries, MaxSkillsPerRoot)
		}
		for _, e := range res.Entries {
			if strings.HasPrefix(e.Name, ".") || (e.Type != wire.FileTypeDir && e.Type != wire.FileTypeSymlink) {
				continue
			}
			names = append(names, e.Name)
			if len(names) > MaxSkillsPerRoot {
				return nil, preconditionf("skill root %s has more than %d skill directories; remove some", root, MaxSkillsPerRoot)
			}
		}
		if res.NextOffset == 0 {
			return names, nil
		}
		if res.NextOffset <= offset {
			return nil, fmt.Errorf("listing skill root %s: the agent answered offset %d with next offset %d", root, offset, res.NextOffset)
		}
		offset = res.NextOffset
	}
}

// checkNotDirectory tells "a parent of root is a file" (the root is
// simply missing) from "root is a file" (a mistake to report).
func checkNotDirectory(ctx context.Context, fsys FS, root string) error {
	fi, err := fsys.Stat(ctx, root)
	if err != nil {
		if isRemote(err) {
			return nil
		}
		return fmt.Errorf("listing skill root %s: %w", root, err)
	}
	return preconditionf("skill root %s is a %s, not a directory; move it away so that skills can live there", root, fi.Type)
}

// loadAll loads the candidates concurrently and returns the skills among
// them in the candidates' order.
func loadAll(ctx context.Context, fsys FS, cands []candidate) ([]ranked, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	skills := make([]Skill, len(cands))
	found := make([]bool, len(cands))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, loadConcurrency)
	for i, c := range cands {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s, ok, err := loadSkill(ctx, fsys, c.root, c.rank == 0, c.name)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
				return
			}
			skills[i], found[i] = s, ok
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]ranked, 0, len(cands))
	for i, s := range skills {
		if found[i] {
			out = append(out, ranked{Skill: s, rank: cands[i].rank})
		}
	}
	return out, nil
}

// loadSkill describes root/name from its SKILL.md. ok is false when there
// is no SKILL.md: the directory is not a skill. A SKILL.md that is there
// but unusable gives a Skill with Error set. The State is left to the
// caller, which knows the other copies.
func loadSkill(ctx context.Context, fsys FS, root string, editable bool, name string) (s Skill, ok bool, err error) {
	s = Skill{Name: name, Root: root, Path: skillPath(root, name), Editable: editable}
	var problems []string
	if err := ValidateName(name); err != nil {
		problems = append(problems, "the directory name is not a valid skill name: "+err.Error())
	}
	text, _, err := readText(ctx, fsys, s.Path, MaxSkillBytes, true)
	switch {
	case errors.Is(err, errMissing):
		return Skill{}, false, nil
	case unusable(err):
		problems = append(problems, err.Error())
	case err != nil:
		return Skill{}, false, err
	default:
		meta, _, err := Parse(text)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case meta.Name != name:
			// The directory name is what the skill is called everywhere
			// (precedence, enable, delete), so a different name in the
			// file would make one skill answer to two names.
			s.Description = meta.Description
			problems = append(problems, fmt.Sprintf("front matter name %s differs from the directory name %s; make them the same (the directory name is the skill's name)", quote(meta.Name), quote(name)))
		default:
			s.Description = meta.Description
		}
	}
	s.Error = strings.Join(problems, "; ")
	return s, true, nil
}

// lookup returns the copies of one skill in precedence order, with their
// states.
func lookup(ctx context.Context, fsys FS, roots []string, name string) ([]Skill, error) {
	idx, err := readIndex(ctx, fsys, roots[0])
	if err != nil {
		return nil, err
	}
	var copies []Skill
	for rank, root := range roots {
		s, ok, err := loadSkill(ctx, fsys, root, rank == 0, name)
		if err != nil {
			return nil, err
		}
		if ok {
			copies = append(copies, s)
		}
	}
	assignStates(copies, idx.disabled)
	return copies, nil
}

// Read returns the SKILL.md of the copy of name that counts, whole, even
// when the skill is disabled or its front matter is broken: reading is
// how a model decides whether to enable or fix it.
func Read(ctx context.Context, fsys FS, cfg Config, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	roots, err := cfg.roots()
	if err != nil {
		return "", err
	}
	for _, root := range roots {
		text, _, err := readText(ctx, fsys, skillPath(root, name), MaxSkillBytes, false)
		if errors.Is(err, errMissing) {
			continue
		}
		if err != nil {
			return "", err
		}
		return text, nil
	}
	return "", notFound(roots, name)
}

func notFound(roots []string, name string) error {
	return notFoundf("no skill named %s: there is no %s/%s in %s", quote(name), name, SkillFile, strings.Join(roots, ", "))
}
