package workspace

import "errors"

// Remedy is what brings a workspace to where a failed call can succeed,
// said in the workspace's terms. The layer that knows berth's tools words
// it (tools.Explain), so this package names none of them.
type Remedy int

const (
	NoRemedy Remedy = iota
	// RemedyCreate: the bot has no workspace yet.
	RemedyCreate
	// RemedyStart: the workspace is not running.
	RemedyStart
	// RemedyRestart: stop and start the workspace; it gets a fresh agent.
	RemedyRestart
)

type remedied struct {
	err    error
	remedy Remedy
}

func (e *remedied) Error() string { return e.err.Error() }
func (e *remedied) Unwrap() error { return e.err }

func withRemedy(r Remedy, err error) error { return &remedied{err: err, remedy: r} }

// RemedyOf is the remedy err carries, or NoRemedy.
func RemedyOf(err error) Remedy {
	var r *remedied
	if errors.As(err, &r) {
		return r.remedy
	}
	return NoRemedy
}
