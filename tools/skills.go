package tools

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/agent/client"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
	"github.com/berth-dev/berth/internal/workspace"
	"github.com/mark3labs/mcp-go/server"
)

// SkillsListOutput lists a workspace's skills.
type SkillsListOutput struct {
	Skills []skills.Skill `json:"skills"`
}

// SkillsUpsertInput writes user skills.
type SkillsUpsertInput struct {
	BotID  string   `json:"bot_id"`
	Skills []string `json:"skills" jsonschema:"description=full SKILL.md texts: YAML front matter with name and description\\, then markdown"`
}

func (s SkillsUpsertInput) bot() string { return s.BotID }

// SkillNameInput names a skill.
type SkillNameInput struct {
	BotID string `json:"bot_id"`
	Name  string `json:"name"`
}

func (s SkillNameInput) bot() string { return s.BotID }

// SkillActionInput changes a skill's state.
type SkillActionInput struct {
	BotID  string `json:"bot_id"`
	Name   string `json:"name"`
	Action string `json:"action" jsonschema:"enum=enable,enum=disable,enum=adopt,description=adopt copies a read-only skill into the user root so it can be edited"`
}

func (s SkillActionInput) bot() string { return s.BotID }

func skillTools(h handlers) []server.ServerTool {
	return []server.ServerTool{
		define("skills_list", "List skills",
			"List the skills in the bot's workspace (user skills in /data/skills and read-only roots), with name, description, source root, state (effective, shadowed or disabled) and whether each is editable.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead, h.skillsList),
		define("skills_upsert", "Add or update skills",
			"Create or replace user skills from SKILL.md texts. All texts are validated first; if any is invalid, none is written.",
			hints{idempotent: true}, auth.ScopeWrite, h.skillsUpsert),
		define("skills_delete", "Delete skill",
			"Delete a user skill. Skills from read-only roots cannot be deleted; disable them instead.",
			hints{destructive: true, idempotent: true}, auth.ScopeWrite, h.skillsDelete),
		define("skills_action", "Enable, disable or adopt skill",
			"enable or disable a skill, or adopt a read-only skill: copy it into the user root, where it is editable and takes precedence.",
			hints{idempotent: true}, auth.ScopeWrite, h.skillsAction),
	}
}

func (h handlers) skillsList(ctx context.Context, _ *call, in BotInput) (SkillsListOutput, string, error) {
	list, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) ([]skills.Skill, error) { return skills.List(ctx, a, h.Skills) })
	if err != nil {
		return SkillsListOutput{}, "", err
	}
	summary := fmt.Sprintf("%d skill(s)", len(list))
	for _, s := range list {
		summary += fmt.Sprintf("\n%s [%s] %s", s.Name, s.State, s.Description)
	}
	return SkillsListOutput{Skills: list}, summary, nil
}

func (h handlers) skillsUpsert(ctx context.Context, _ *call, in SkillsUpsertInput) (SkillsListOutput, string, error) {
	written, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) ([]skills.Skill, error) {
		return skills.Upsert(ctx, a, h.Skills, in.Skills)
	})
	if err != nil {
		return SkillsListOutput{}, "", err
	}
	return SkillsListOutput{Skills: written}, fmt.Sprintf("wrote %d skill(s)", len(written)), nil
}

func (h handlers) skillsDelete(ctx context.Context, _ *call, in SkillNameInput) (SkillNameInput, string, error) {
	missing, err := h.remove(ctx, in.BotID, func(a *client.Client) error { return skills.Delete(ctx, a, h.Skills, in.Name) })
	switch {
	case err != nil:
		return in, "", err
	case missing != nil:
		return in, fmt.Sprintf("%v: nothing to delete", missing), nil
	}
	return in, "deleted skill " + in.Name, nil
}

func (h handlers) skillsAction(ctx context.Context, _ *call, in SkillActionInput) (skills.Skill, string, error) {
	s, err := workspace.Ask(ctx, h.Manager, in.BotID, func(a *client.Client) (skills.Skill, error) {
		return skills.Action(ctx, a, h.Skills, in.Name, in.Action)
	})
	if err != nil {
		return s, "", err
	}
	return s, fmt.Sprintf("%s: %s is now %s", in.Action, s.Name, s.State), nil
}
