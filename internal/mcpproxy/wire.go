package mcpproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxMessageBytes caps one JSON-RPC message in either direction. A tool
// result of a bot's server is untrusted and could be anything; beyond this
// a line is dropped (and logged), never buffered.
const MaxMessageBytes = 16 << 20

// message is one JSON-RPC 2.0 message, decoded only as far as routing
// needs: ids, params, results and errors stay raw and pass through as
// they were.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// JSON-RPC error codes berth answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	// codeServerGone is in the implementation-defined range: the bot's
	// server exited or could not be reached.
	codeServerGone = -32000
)

func (m *message) isRequest() bool      { return m.Method != "" && hasID(m.ID) }
func (m *message) isNotification() bool { return m.Method != "" && !hasID(m.ID) }
func (m *message) isResponse() bool     { return m.Method == "" && hasID(m.ID) }

func hasID(id json.RawMessage) bool { return len(id) > 0 && !bytes.Equal(id, []byte("null")) }

// idKey turns a raw id into a map key: 7 and "7" are different ids, and
// the same id may be spelt with or without spaces.
func idKey(id json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, id); err != nil {
		return string(id)
	}
	return b.String()
}

// parseMessage decodes a line into a message, refusing what is not
// JSON-RPC 2.0 (banners, logs printed to stdout by mistake).
func parseMessage(line []byte) (*message, error) {
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, err
	}
	if m.JSONRPC != "2.0" {
		return nil, errors.New(`not JSON-RPC 2.0: "jsonrpc" is not "2.0"`)
	}
	if m.Method == "" && !hasID(m.ID) {
		return nil, errors.New("neither a request, a notification nor a response")
	}
	return &m, nil
}

// lineReader reads newline-delimited messages from a server's stdout.
type lineReader struct {
	r *bufio.Reader
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line without its newline. A line over
// MaxMessageBytes is skipped whole and reported as errLineTooLong, so the
// stream stays in step.
func (lr *lineReader) next() ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if !tooLong {
			// Room for the message and its "\r\n"; the cap itself is
			// checked once the line end is trimmed.
			if len(line)+len(chunk) > MaxMessageBytes+2 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if tooLong {
			return nil, errLineTooLong
		}
		if err != nil && len(line) == 0 {
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > MaxMessageBytes {
			return nil, errLineTooLong
		}
		return line, nil
	}
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", MaxMessageBytes)

// encodeLine marshals v as one line.
func encodeLine(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// errorResponse is the JSON-RPC error answer to the request id.
func errorResponse(id json.RawMessage, code int, msg string) *message {
	return &message{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}}
}

// preview shortens an untrusted line for a log entry.
func preview(line []byte) string {
	const n = 200
	if len(line) > n {
		return string(line[:n]) + "…"
	}
	return string(line)
}
