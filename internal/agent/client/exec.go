package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/agent/wire"
	"github.com/containerd/errdefs"
)

// Response caps of the process and terminal calls. A list of MaxProcesses
// entries, or an output chunk of MaxOutputLimit bytes in base64, does not fit
// in MaxResponseBytes; these bounds are what a correct agent can send, with
// room for JSON escaping.
const (
	maxListResponse  = 16 << 20
	maxChunkResponse = 4 << 20
	// maxEventLine bounds one streamed output line of exec.
	maxEventLine = 64 << 10
	// maxIDLen bounds the process and terminal ids a caller may pass.
	maxIDLen = 64
)

// callInfo makes one call whose answer describes one process or terminal,
// and checks that answer before anyone uses it.
func callInfo[T any](ctx context.Context, c *Client, method, path string, in any, validate func(*T) error) (T, error) {
	var info, zero T
	if err := c.doJSON(ctx, method, path, nil, in, &info, wire.MaxResponseBytes, defaultCallTimeout); err != nil {
		return zero, err
	}
	if err := validate(&info); err != nil {
		return zero, err
	}
	return info, nil
}

// listInfos reads a list of processes or terminals and checks every entry;
// a list longer than the agent's own limit allows is a bad response.
func listInfos[L, T any](ctx context.Context, c *Client, path, what string, limit int, items func(*L) []T, validate func(*T) error) ([]T, error) {
	var list L
	if err := c.doJSON(ctx, http.MethodGet, path, nil, nil, &list, maxListResponse, defaultCallTimeout); err != nil {
		return nil, err
	}
	l := items(&list)
	if len(l) > limit+1 {
		return nil, badResponse("%d %s listed", len(l), what)
	}
	for i := range l {
		if err := validate(&l[i]); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// doJSON is Client.call with a response cap of its own, query parameters and
// a default timeout for contexts without a deadline (0: none).
func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in, out any, maxBody int64, timeout time.Duration) error {
	r := request{method: method, path: path, query: query, maxBody: maxBody, timeout: timeout}
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		r.body, r.contentType = bytes.NewReader(data), "application/json"
	}
	return c.do(ctx, r, out)
}

// decodeLimited interprets one complete answer from the agent, refusing
// one larger than maxBody.
func decodeLimited(status int, h http.Header, body []byte, out any, maxBody int64) error {
	if int64(len(body)) > maxBody {
		return fmt.Errorf("%w: response larger than %d bytes", ErrBadResponse, maxBody)
	}
	if err := checkProtocolHeader(h, body); err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return remoteError(status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	return nil
}

// checkID refuses ids that no agent hands out, before they become part of a
// URL path.
func checkID(kind, id string) error {
	valid := id != "" && len(id) <= maxIDLen
	for _, r := range id {
		valid = valid && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}
	if !valid {
		return fmt.Errorf("%w: %s id %q is not one berth gives (letters, digits, - and _)", errdefs.ErrInvalidArgument, kind, wire.TruncateInfo(id, maxIDLen))
	}
	return nil
}

func badResponse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadResponse, fmt.Sprintf(format, args...))
}

// validateExecResult checks an ExecResult from the (untrusted) agent against the
// request's effective MaxOutput.
func validateExecResult(r *wire.ExecResult, maxOut int) error {
	switch {
	case r.ExitCode < 0 || r.ExitCode > 255:
		return badResponse("exit_code %d", r.ExitCode)
	case len(r.Stdout) > maxOut || len(r.Stderr) > maxOut:
		return badResponse("output larger than max_output %d", maxOut)
	case r.StdoutTotal < int64(len(r.Stdout)) || r.StderrTotal < int64(len(r.Stderr)):
		return badResponse("output totals smaller than the output")
	case r.StdoutTruncated != (r.StdoutTotal > int64(len(r.Stdout))) ||
		r.StderrTruncated != (r.StderrTotal > int64(len(r.Stderr))):
		return badResponse("truncated flags contradict the totals")
	case r.DurationMillis < 0 || r.PID < 0:
		return badResponse("duration_ms %d, pid %d", r.DurationMillis, r.PID)
	}
	if err := checkText(r.Signal, 32); err != nil {
		return badResponse("signal: %v", err)
	}
	return nil
}

// checkState validates what ProcessInfo and TerminalInfo share.
func checkState(id string, pid int, started time.Time, running bool, exitCode *int, ended *time.Time, sig string) error {
	if checkID("", id) != nil {
		return badResponse("id %q", wire.TruncateInfo(id, maxIDLen))
	}
	switch {
	case pid < 1:
		return badResponse("pid %d", pid)
	case started.IsZero():
		return badResponse("started_at missing")
	case running && (exitCode != nil || ended != nil):
		return badResponse("running with an exit code or end time")
	case !running && ended == nil:
		return badResponse("not running but no end time")
	case exitCode != nil && (*exitCode < 0 || *exitCode > 255):
		return badResponse("exit_code %d", *exitCode)
	}
	if err := checkText(sig, 32); err != nil {
		return badResponse("signal: %v", err)
	}
	return nil
}

// infoStringMax is the longest a shortened string of ProcessInfo can be:
// MaxInfoString plus the three bytes of "…".
const infoStringMax = wire.MaxInfoString + 3

func validateProcessInfo(p *wire.ProcessInfo) error {
	if err := checkState(p.ID, p.PID, p.StartedAt, p.Running, p.ExitCode, p.EndedAt, p.Signal); err != nil {
		return err
	}
	if len(p.Argv) > wire.MaxInfoArgs+1 || len(p.Command) > infoStringMax || len(p.Cwd) > infoStringMax {
		return badResponse("process %s: command line or cwd too long", p.ID)
	}
	for _, a := range p.Argv {
		if len(a) > infoStringMax {
			return badResponse("process %s: argument too long", p.ID)
		}
	}
	if p.StdoutTotal < 0 || p.StderrTotal < 0 {
		return badResponse("process %s: negative output totals", p.ID)
	}
	return nil
}

// validateOutputChunk checks a chunk read from offset with the given effective limit.
// A negative offset skips the check of where the chunk starts: it was read
// from the end, or (SendTerminal) from a position the agent chose.
func validateOutputChunk(ch *wire.OutputChunk, offset int64, limit int) error {
	switch {
	case len(ch.Data) > limit:
		return badResponse("chunk of %d bytes, asked for at most %d", len(ch.Data), limit)
	case ch.Offset < 0 || ch.Dropped < 0:
		return badResponse("negative offset or dropped count")
	case ch.NextOffset != ch.Offset+int64(len(ch.Data)):
		return badResponse("next_offset %d does not follow offset %d and %d bytes", ch.NextOffset, ch.Offset, len(ch.Data))
	case ch.Total < ch.NextOffset:
		return badResponse("total %d before next_offset %d", ch.Total, ch.NextOffset)
	case ch.Dropped > ch.Offset:
		return badResponse("dropped %d more than offset %d", ch.Dropped, ch.Offset)
	case offset >= 0 && ch.Offset != offset+ch.Dropped:
		return badResponse("offset %d, asked for %d with %d dropped", ch.Offset, offset, ch.Dropped)
	}
	return nil
}

// effectiveMaxOutput is the MaxOutput the agent applies to req.
// execAnswerGrace is how long after a command's timeout the host still
// waits for the agent to report how it ended.
const execAnswerGrace = 30 * time.Second

func effectiveMaxOutput(n int) int {
	if n <= 0 {
		return wire.DefaultExecMaxOutput
	}
	return min(n, wire.MaxExecOutput)
}

// Exec runs a command in the foreground and returns how it ended. onOutput,
// if not nil, is called with output as it streams (see ExecEvent for how
// that view may skip); the result holds the authoritative first MaxOutput
// bytes of each stream. There is no default timeout: a command may run as
// long as ctx allows, and ending ctx closes the connection, which makes the
// agent kill the command's process group; Exec then returns ctx.Err().
func (c *Client) Exec(ctx context.Context, req wire.ExecRequest, onOutput func(stream string, data []byte)) (wire.ExecResult, error) {
	maxOut := effectiveMaxOutput(req.MaxOutput)
	if _, ok := ctx.Deadline(); !ok && req.TimeoutMillis > 0 {
		// The agent kills the command at its timeout and then answers; the
		// host does not wait much longer for an agent that never does.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, time.Duration(req.TimeoutMillis)*time.Millisecond+execAnswerGrace,
			fmt.Errorf("berth agent: the command's timeout passed %s ago and the agent has not reported its end: %w", execAnswerGrace, context.DeadlineExceeded))
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return wire.ExecResult{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://berth-agent"+wire.PathExec, bytes.NewReader(body))
	if err != nil {
		return wire.ExecResult{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.send(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return wire.ExecResult{}, context.Cause(ctx)
		}
		return wire.ExecResult{}, fmt.Errorf("berth agent: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxResponseBytes+1))
		if err != nil {
			return wire.ExecResult{}, fmt.Errorf("berth agent: reading response: %w", err)
		}
		var unused struct{}
		if err := decodeResponse(resp.StatusCode, resp.Header, data, &unused); err != nil {
			return wire.ExecResult{}, err
		}
		return wire.ExecResult{}, badResponse("exec answered HTTP %d", resp.StatusCode)
	}
	if err := checkProtocolHeader(resp.Header, nil); err != nil {
		return wire.ExecResult{}, err
	}
	res, err := readExecEvents(resp.Body, maxOut, onOutput)
	if err != nil {
		if ctx.Err() != nil {
			return wire.ExecResult{}, context.Cause(ctx)
		}
		return wire.ExecResult{}, err
	}
	// Let the connection be reused: what follows the result is only the
	// end of the chunked body.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return res, nil
}

// readExecEvents reads ExecEvent lines until the result. It is apart from
// Exec so that fuzzing can feed it arbitrary streams.
func readExecEvents(r io.Reader, maxOut int, onOutput func(string, []byte)) (wire.ExecResult, error) {
	// The result line carries both streams in base64.
	maxResult := 2*base64.StdEncoding.EncodedLen(maxOut) + maxEventLine
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLimitedLine(br, maxResult)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return wire.ExecResult{}, fmt.Errorf("berth agent: the exec stream ended without a result (did the workspace stop?): %w", io.ErrUnexpectedEOF)
			}
			if errors.Is(err, ErrBadResponse) {
				return wire.ExecResult{}, err
			}
			return wire.ExecResult{}, fmt.Errorf("berth agent: reading exec stream: %w", err)
		}
		var ev wire.ExecEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return wire.ExecResult{}, badResponse("exec event: %v", err)
		}
		switch {
		case ev.Result != nil:
			if err := validateExecResult(ev.Result, maxOut); err != nil {
				return wire.ExecResult{}, err
			}
			return *ev.Result, nil
		case ev.Error != nil:
			return wire.ExecResult{}, remoteError(http.StatusInternalServerError, mustJSON(ev.Error))
		case ev.Stream == wire.StreamStdout || ev.Stream == wire.StreamStderr:
			if len(line) > maxEventLine || len(ev.Data) > wire.ExecEventMaxData || ev.Offset < 0 {
				return wire.ExecResult{}, badResponse("output event of %d bytes", len(ev.Data))
			}
			if onOutput != nil && len(ev.Data) > 0 {
				onOutput(ev.Stream, ev.Data)
			}
		default:
			return wire.ExecResult{}, badResponse("exec event of unknown kind")
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// readLimitedLine reads one '\n'-terminated line of at most max bytes.
func readLimitedLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, badResponse("line longer than %d bytes", max)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// StartProcess starts a command in the background and returns at once.
// req.MaxOutput does not apply: the agent keeps the last
// ProcessOutputBuffer bytes of each stream.
func (c *Client) StartProcess(ctx context.Context, req wire.ExecRequest) (wire.ProcessInfo, error) {
	return callInfo(ctx, c, http.MethodPost, wire.PathProcesses, req, validateProcessInfo)
}

// Processes lists the background processes the agent remembers, oldest
// first.
func (c *Client) Processes(ctx context.Context) ([]wire.ProcessInfo, error) {
	return listInfos(ctx, c, wire.PathProcesses, "processes", wire.MaxProcesses, func(l *wire.ProcessList) []wire.ProcessInfo { return l.Processes }, validateProcessInfo)
}

// Process describes one background process.
func (c *Client) Process(ctx context.Context, id string) (wire.ProcessInfo, error) {
	if err := checkID("process", id); err != nil {
		return wire.ProcessInfo{}, err
	}
	return callInfo(ctx, c, http.MethodGet, wire.PathProcesses+"/"+id, nil, validateProcessInfo)
}

// ProcessOutput reads up to limit bytes (0: DefaultOutputLimit, at most
// MaxOutputLimit) of a background process's stream ("stdout", the default
// when empty, or "stderr") from offset; a negative offset -N reads the last
// N bytes. The chunk's Process is set.
func (c *Client) ProcessOutput(ctx context.Context, id, stream string, offset int64, limit int) (wire.OutputChunk, error) {
	if err := checkID("process", id); err != nil {
		return wire.OutputChunk{}, err
	}
	if stream == "" {
		stream = wire.StreamStdout
	}
	if stream != wire.StreamStdout && stream != wire.StreamStderr {
		return wire.OutputChunk{}, fmt.Errorf("stream must be %s or %s, not %q", wire.StreamStdout, wire.StreamStderr, wire.TruncateInfo(stream, 32))
	}
	q := url.Values{"stream": {stream}, "offset": {strconv.FormatInt(offset, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var ch wire.OutputChunk
	if err := c.doJSON(ctx, http.MethodGet, wire.PathProcesses+"/"+id+"/output", q, nil, &ch, maxChunkResponse, defaultCallTimeout); err != nil {
		return wire.OutputChunk{}, err
	}
	if err := validateOutputChunk(&ch, offset, wire.OutputLimit(int64(limit))); err != nil {
		return wire.OutputChunk{}, err
	}
	if ch.Process == nil || ch.Terminal != nil {
		return wire.OutputChunk{}, badResponse("process output without the process")
	}
	if err := validateProcessInfo(ch.Process); err != nil {
		return wire.OutputChunk{}, err
	}
	return ch, nil
}

// SignalProcess sends signal (a name such as "SIGTERM" or "TERM", or a
// number) to a background process's whole process group. Signalling a
// process that has exited is a *RemoteError with CodeConflict.
func (c *Client) SignalProcess(ctx context.Context, id, signal string) error {
	if err := checkID("process", id); err != nil {
		return err
	}
	_, err := callInfo(ctx, c, http.MethodPost, wire.PathProcesses+"/"+id+"/signal", wire.SignalRequest{Signal: signal}, validateProcessInfo)
	return err
}

// ForgetProcess drops an exited background process and its output. A
// running process is a *RemoteError with CodeConflict.
func (c *Client) ForgetProcess(ctx context.Context, id string) error {
	if err := checkID("process", id); err != nil {
		return err
	}
	_, err := callInfo(ctx, c, http.MethodDelete, wire.PathProcesses+"/"+id, nil, validateProcessInfo)
	return err
}
