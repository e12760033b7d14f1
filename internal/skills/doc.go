// Package skills owns a workspace's skills: directories holding a SKILL.md
// (YAML front matter with a name and a description, then markdown) under
// the skill roots inside the workspace, and the one index file that says
// which skills are disabled.
//
// Roots, in precedence order: the user root (Config.UserRoot, default
// /data/skills), which berth edits, then the read-only roots
// (Config.ReadOnlyRoots, default /data/.agents/skills), which berth only
// reads. A skill's name is the name of its directory. Of the copies of one
// name, the first in precedence order is the one that counts; the others
// are shadowed. The index, <UserRoot>/.index.json, holds the names the user
// disabled; only Upsert, Delete and Action write it, so that listing and
// reading never change the workspace.
//
// States, as List reports them:
//   - "effective": the copy that counts, and its name is not disabled.
//   - "disabled": the copy that would count, but its name is disabled.
//     Disabling is by name: it never lets a shadowed copy take over.
//   - "shadowed": any other copy; ShadowedBy names the root of the copy
//     that counts (whether that one is effective or disabled).
//
// A SKILL.md that cannot be used (bad front matter, a front matter name
// that differs from its directory, too large, not text) is listed with
// Error set rather than hidden, and still takes its place in precedence:
// a broken user copy must be fixed, not silently replaced by a read-only
// one.
//
// This package must not know about containers, the Manager or MCP: it
// works only through FS, the part of the agent's file API it needs, and
// everything it reads from the workspace is untrusted (sizes are capped,
// names checked). It must not write outside the user root.
package skills
