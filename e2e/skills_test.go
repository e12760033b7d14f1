package e2e

import (
	"context"
	"strings"
	"testing"
)

type skillOut struct {
	Name     string `json:"name"`
	Root     string `json:"root"`
	State    string `json:"state"`
	Editable bool   `json:"editable"`
}

func skillMD(name, desc string) string {
	return "---\nname: " + name + "\ndescription: " + desc + "\n---\n# " + name + "\n"
}

// TestSkills: precedence and shadowing, disable/enable, adopt, invalid
// names, and refusal to delete read-only skills.
func TestSkills(t *testing.T) {
	e := newEnv(t)
	c := e.stdioSDK()
	mustCall(t, c, "workspace_create", map[string]any{"bot_id": "skilled"})
	e.execIn(t, "skilled", "sh", "-c", `for s in alpha beta; do mkdir -p /data/.agents/skills/$s && printf -- '---\nname: %s\ndescription: shared %s\n---\nbody\n' $s $s > /data/.agents/skills/$s/SKILL.md; done`)
	list := func() map[string][]skillOut {
		t.Helper()
		var out struct {
			Skills []skillOut `json:"skills"`
		}
		mustCall(t, c, "skills_list", map[string]any{"bot_id": "skilled"}).decode(t, &out)
		byName := map[string][]skillOut{}
		for _, s := range out.Skills {
			byName[s.Name] = append(byName[s.Name], s)
		}
		return byName
	}
	got := list()
	if len(got["alpha"]) != 1 || got["alpha"][0].State != "effective" || got["alpha"][0].Editable {
		t.Fatalf("read-only skill: %+v", got)
	}

	mustCall(t, c, "skills_upsert", map[string]any{"bot_id": "skilled", "skills": []string{skillMD("alpha", "mine")}})
	got = list()
	if len(got["alpha"]) != 2 || got["alpha"][0].State != "effective" || !got["alpha"][0].Editable || got["alpha"][1].State != "shadowed" {
		t.Fatalf("user skill shadows the read-only one: %+v", got["alpha"])
	}
	text, err := c.readResource(context.Background(), "berth://bots/skilled/skills/alpha")
	if err != nil || !strings.Contains(text, "description: mine") {
		t.Fatalf("skill resource: %q %v", text, err)
	}

	mustCall(t, c, "skills_action", map[string]any{"bot_id": "skilled", "name": "beta", "action": "disable"})
	if got = list(); got["beta"][0].State != "disabled" {
		t.Fatalf("disable: %+v", got["beta"])
	}
	mustCall(t, c, "skills_action", map[string]any{"bot_id": "skilled", "name": "beta", "action": "enable"})
	if got = list(); got["beta"][0].State != "effective" {
		t.Fatalf("enable: %+v", got["beta"])
	}
	if res := mustCall(t, c, "skills_delete", map[string]any{"bot_id": "skilled", "name": "beta"}); !res.IsError || !strings.Contains(res.Text, "read-only") {
		t.Fatalf("deleting a read-only skill: %+v", res)
	}
	mustCall(t, c, "skills_action", map[string]any{"bot_id": "skilled", "name": "beta", "action": "adopt"})
	if got = list(); !got["beta"][0].Editable || got["beta"][0].State != "effective" {
		t.Fatalf("adopt: %+v", got["beta"])
	}
	mustCall(t, c, "skills_delete", map[string]any{"bot_id": "skilled", "name": "beta"})
	if got = list(); got["beta"][0].Editable {
		t.Fatalf("after deleting the adopted copy the read-only one is effective again: %+v", got["beta"])
	}

	for _, bad := range []string{".hidden", "a/b", "", strings.Repeat("x", 65)} {
		res := mustCall(t, c, "skills_upsert", map[string]any{"bot_id": "skilled", "skills": []string{skillMD("ok-one", "fine"), skillMD(bad, "bad")}})
		if !res.IsError {
			t.Fatalf("invalid name %q accepted: %s", bad, res.Text)
		}
	}
	if _, ok := list()["ok-one"]; ok {
		t.Fatal("an upsert with one invalid skill wrote the valid one")
	}
}
