package workspace

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// Some of a bot's settings live beside containerd, one JSON file per bot
// in a directory of the state dir (MCP server registrations, exposed ports,
// network access requests). These helpers keep those files alike: private,
// replaced atomically, gone when empty.

// writeBotFile replaces the bot's file at path with items, atomically (a
// crash leaves the old list or the new one); an empty list removes it.
func writeBotFile[T any](path, bot string, items []T) error {
	if len(items) == 0 {
		return removeIfExists(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(items, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), bot+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readBotFile reads the bot's file at path; a missing file is an empty list.
func readBotFile[T any](path string) ([]T, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var items []T
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, err
	}
	return items, nil
}

// botsWithFiles lists the bots that have a file in dir.
func botsWithFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var bots []string
	for _, e := range entries {
		bot, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && ValidateBotID(bot) == nil {
			bots = append(bots, bot)
		}
	}
	return bots, nil
}
