package tools

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/skills"
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

func skillTools(d Deps) []server.ServerTool {
	m, cfg := d.Manager, d.Skills
	return []server.ServerTool{
		define("skills_list", "List skills",
			"List the skills in the bot's workspace (user skills in /data/skills and read-only roots), with name, description, source root, state (effective, shadowed or disabled) and whether each is editable.",
			hints{readOnly: true, idempotent: true}, auth.ScopeRead,
			func(ctx context.Context, _ *call, in BotInput) (SkillsListOutput, string, error) {
				client, err := m.Agent(ctx, in.BotID)
				if err != nil {
					return SkillsListOutput{}, "", err
				}
				list, err := skills.List(ctx, client, cfg)
				if err != nil {
					return SkillsListOutput{}, "", m.AgentError(ctx, in.BotID, err)
				}
				summary := fmt.Sprintf("%d skill(s)", len(list))
				for _, s := range list {
					summary += fmt.Sprintf("\n%s [%s] %s", s.Name, s.State, s.Description)
				}
				return SkillsListOutput{Skills: list}, summary, nil
			}),
		define("skills_upsert", "Add or update skills",
			"Create or replace user skills from SKILL.md texts. All texts are validated first; if any is invalid, none is written.",
			hints{idempotent: true}, auth.ScopeWrite,
			func(ctx context.Context, _ *call, in SkillsUpsertInput) (SkillsListOutput, string, error) {
				client, err := m.Agent(ctx, in.BotID)
				if err != nil {
					return SkillsListOutput{}, "", err
				}
				written, err := skills.Upsert(ctx, client, cfg, in.Skills)
				if err != nil {
					return SkillsListOutput{}, "", m.AgentError(ctx, in.BotID, err)
				}
				return SkillsListOutput{Skills: written}, fmt.Sprintf("wrote %d skill(s)", len(written)), nil
			}),
		define("skills_delete", "Delete skill",
			"Delete a user skill. Skills from read-only roots cannot be deleted; disable them instead.",
			hints{destructive: true, idempotent: true}, auth.ScopeWrite,
			func(ctx context.Context, _ *call, in SkillNameInput) (SkillNameInput, string, error) {
				client, err := m.Agent(ctx, in.BotID)
				if err != nil {
					return in, "", err
				}
				if err := skills.Delete(ctx, client, cfg, in.Name); err != nil {
					if gone(err) {
						return in, fmt.Sprintf("%v: nothing to delete", err), nil
					}
					return in, "", m.AgentError(ctx, in.BotID, err)
				}
				return in, "deleted skill " + in.Name, nil
			}),
		define("skills_action", "Enable, disable or adopt skill",
			"enable or disable a skill, or adopt a read-only skill: copy it into the user root, where it is editable and takes precedence.",
			hints{idempotent: true}, auth.ScopeWrite,
			func(ctx context.Context, _ *call, in SkillActionInput) (skills.Skill, string, error) {
				client, err := m.Agent(ctx, in.BotID)
				if err != nil {
					return skills.Skill{}, "", err
				}
				s, err := skills.Action(ctx, client, cfg, in.Name, in.Action)
				if err != nil {
					return s, "", m.AgentError(ctx, in.BotID, err)
				}
				return s, fmt.Sprintf("%s: %s is now %s", in.Action, s.Name, s.State), nil
			}),
	}
}
