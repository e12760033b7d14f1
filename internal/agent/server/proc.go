package server

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// procInfo is the part of /proc/PID/stat the agent needs.
type procInfo struct {
	pid, ppid int
	state     byte
}

// live reports whether the process still runs: zombies are only waiting to
// be reaped, and dead entries are on their way out of /proc.
func (p procInfo) live() bool { return p.state != 'Z' && p.state != 'X' && p.state != 'x' }

// readProcs lists the processes visible in procRoot. Processes that exit
// while the directory is being read are skipped, not reported as errors.
func readProcs(procRoot string) ([]procInfo, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	procs := make([]procInfo, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		p, err := parseStat(b)
		if err != nil {
			continue
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// parseStat parses "pid (comm) state ppid ...". comm may itself contain
// spaces and parentheses, so the fields are located from the last ')'.
func parseStat(b []byte) (procInfo, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return procInfo{}, errors.New("malformed stat: no comm")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procInfo{}, fmt.Errorf("malformed stat pid: %w", err)
	}
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return procInfo{}, errors.New("malformed stat: no state or ppid")
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return procInfo{}, fmt.Errorf("malformed stat ppid: %w", err)
	}
	return procInfo{pid: pid, ppid: ppid, state: fields[0][0]}, nil
}

// liveDescendants returns the pids of the live processes below root.
func liveDescendants(procs []procInfo, root int) []int {
	kids := make(map[int][]procInfo)
	for _, p := range procs {
		if p.pid != root {
			kids[p.ppid] = append(kids[p.ppid], p)
		}
	}
	var out []int
	seen := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, k := range kids[parent] {
			// /proc is read entry by entry, so a snapshot can contain
			// cycles through reused pids; never walk one twice.
			if seen[k.pid] {
				continue
			}
			seen[k.pid] = true
			queue = append(queue, k.pid)
			if k.live() {
				out = append(out, k.pid)
			}
		}
	}
	return out
}
