package skills

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits of one skill. The name and description limits are those of the
// Agent Skills format, so a skill written here works in other agents too.
const (
	// MaxSkillBytes caps one SKILL.md, read or written.
	MaxSkillBytes = 256 << 10
	// MaxNameLength caps a skill name, in bytes (names are ASCII).
	MaxNameLength = 64
	// MaxDescriptionLength caps a description, in characters.
	MaxDescriptionLength = 1024
	// MaxFrontMatterBytes caps the front matter: room for a name, a
	// description and a few short keys, while a listing, which parses the
	// front matter of every skill, stays cheap whatever a workspace writes.
	MaxFrontMatterBytes = 16 << 10
)

// Meta is a SKILL.md's front matter.
type Meta struct {
	Name        string
	Description string
	// Extra holds every other key, decoded from YAML; maps inside it
	// always have string keys, so Extra encodes as JSON. Nil when there
	// are no other keys.
	Extra map[string]any
}

// frontMatterState says how far splitFrontMatter got.
type frontMatterState int

const (
	frontMatterClosed frontMatterState = iota
	// frontMatterAbsent: the text does not start with a "---" line.
	frontMatterAbsent
	// frontMatterOpen: the opening line is there, the closing one is not
	// (yet, for a reader that has only part of the file).
	frontMatterOpen
)

// splitFrontMatter finds the YAML between a first line "---" and the next
// line "---". Trailing blanks and a CR are ignored on both lines, so files
// edited on Windows or with a stray space still parse.
func splitFrontMatter(text string) (yamlText, body string, state frontMatterState) {
	text = strings.TrimPrefix(text, "\ufeff")
	first, rest, _ := strings.Cut(text, "\n")
	if !isDelimiter(first) {
		return "", "", frontMatterAbsent
	}
	for off := 0; off < len(rest); {
		line, _, _ := strings.Cut(rest[off:], "\n")
		next := off + len(line) + 1
		if isDelimiter(line) {
			return rest[:off], rest[min(next, len(rest)):], frontMatterClosed
		}
		off = next
	}
	return "", "", frontMatterOpen
}

func isDelimiter(line string) bool {
	return strings.TrimRight(line, " \t\r") == "---"
}

// Parse splits a SKILL.md into its front matter and its markdown body and
// checks the front matter: it must be a YAML mapping with a valid name (see
// ValidateName) and a non-empty description. Errors are classed
// errdefs.ErrInvalidArgument and say what to change.
func Parse(text string) (meta Meta, body string, err error) {
	if len(text) > MaxSkillBytes {
		return Meta{}, "", invalidf("SKILL.md is %d bytes long; at most %d are allowed", len(text), MaxSkillBytes)
	}
	if !utf8.ValidString(text) || strings.IndexByte(text, 0) >= 0 {
		return Meta{}, "", invalidf("SKILL.md must be UTF-8 text without NUL bytes")
	}
	yamlText, body, state := splitFrontMatter(text)
	switch state {
	case frontMatterAbsent:
		return Meta{}, "", invalidf("SKILL.md must start with YAML front matter: a line \"---\", then lines like \"name: my-skill\" and \"description: what it does and when to use it\", then a line \"---\"")
	case frontMatterOpen:
		return Meta{}, "", invalidf("SKILL.md front matter is not closed: add a line \"---\" after the last front matter line")
	}
	if len(yamlText) > MaxFrontMatterBytes {
		return Meta{}, "", errFrontMatterTooLong(len(yamlText))
	}
	fields, err := decodeFrontMatter(yamlText)
	if err != nil {
		return Meta{}, "", err
	}

	name, err := stringField(fields, "name")
	if err != nil {
		return Meta{}, "", err
	}
	if err := ValidateName(name); err != nil {
		return Meta{}, "", invalidf("front matter name: %w", err)
	}
	desc, err := stringField(fields, "description")
	if err != nil {
		return Meta{}, "", err
	}
	desc = strings.TrimSpace(desc)
	if desc == "" {
		return Meta{}, "", invalidf("front matter description is empty: say what the skill does and when to use it")
	}
	if n := utf8.RuneCountInString(desc); n > MaxDescriptionLength {
		return Meta{}, "", invalidf("front matter description is %d characters long; at most %d are allowed", n, MaxDescriptionLength)
	}

	meta = Meta{Name: name, Description: desc}
	for k, v := range fields {
		if k == "name" || k == "description" {
			continue
		}
		if meta.Extra == nil {
			meta.Extra = make(map[string]any, len(fields))
		}
		meta.Extra[k] = jsonSafe(v)
	}
	return meta, body, nil
}

func errFrontMatterTooLong(n int) error {
	return invalidf("SKILL.md front matter is %d bytes long; at most %d are allowed: keep it to the name, the description and short keys, and put the rest in the body", n, MaxFrontMatterBytes)
}

// decodeFrontMatter decodes the YAML into a map. The YAML comes from the
// workspace or a model, and the decoder is third-party code: a panic in it
// becomes an error instead of taking the server down.
func decodeFrontMatter(yamlText string) (fields map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			fields, err = nil, invalidf("SKILL.md front matter is not valid YAML (%v)", r)
		}
	}()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(yamlText), &doc); err != nil {
		return nil, invalidf("SKILL.md front matter is not valid YAML: %s", yamlMessage(err))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, invalidf("SKILL.md front matter is empty: it needs at least \"name:\" and \"description:\"")
	}
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, invalidf("SKILL.md front matter must be a YAML mapping of keys to values (\"name: my-skill\"), not a %s", nodeKind(doc.Content[0].Kind))
	}
	if err := doc.Content[0].Decode(&fields); err != nil {
		return nil, invalidf("SKILL.md front matter is not valid YAML: %s", yamlMessage(err))
	}
	return fields, nil
}

// yamlMessage drops the decoder's "yaml: " prefix; the message says what
// is wrong, and the caller's context says it is YAML.
func yamlMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func nodeKind(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

func stringField(fields map[string]any, key string) (string, error) {
	v, ok := fields[key]
	if !ok || v == nil {
		return "", invalidf("SKILL.md front matter has no %s: add a line \"%s: ...\"", key, key)
	}
	s, ok := v.(string)
	if !ok {
		return "", invalidf("front matter %s must be a string, not %T (put it in quotes)", key, v)
	}
	return s, nil
}

// jsonSafe turns the map[any]any that YAML gives for a mapping with
// non-string keys into map[string]any, recursively, and the floats JSON
// cannot hold into text, so that a caller can encode Extra as JSON.
func jsonSafe(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonSafe(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[fmt.Sprint(k)] = jsonSafe(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonSafe(e)
		}
		return out
	case float64:
		// YAML has .nan and .inf; JSON has neither.
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	return v
}

// ValidateName checks a skill name: 1 to MaxNameLength ASCII letters,
// digits and "._+-", not starting with "." (hidden, and "." and ".." are
// not names) or "-" (it would read as an option in a shell command). Names
// become directory names, so this is what keeps a name from reaching
// outside its root. Errors are classed errdefs.ErrInvalidArgument.
func ValidateName(name string) error {
	if name == "" {
		return invalidf("skill name is empty")
	}
	if len(name) > MaxNameLength {
		return invalidf("skill name %s is %d bytes long; at most %d are allowed", quote(name), len(name), MaxNameLength)
	}
	for i := 0; i < len(name); {
		c := name[i]
		if c < utf8.RuneSelf && nameByte(c) {
			i++
			continue
		}
		r, _ := utf8.DecodeRuneInString(name[i:])
		return invalidf("skill name %s contains %q; use only ASCII letters, digits and . _ + -", quote(name), r)
	}
	switch name[0] {
	case '.':
		return invalidf("skill name %s must not start with \".\"", quote(name))
	case '-':
		return invalidf("skill name %s must not start with \"-\"", quote(name))
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '+' || c == '-'
}
