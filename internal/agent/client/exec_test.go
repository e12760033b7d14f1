package client

import (
	"bytes"
	"testing"

	"github.com/berth-dev/berth/internal/agent/wire"
)

func FuzzReadExecEvents(f *testing.F) {
	f.Add([]byte(`{"stream":"stdout","data":"aGk="}` + "\n" + `{"result":{"exit_code":0,"stdout":"aGk=","stderr":null,"stdout_total":2,"stderr_total":0,"duration_ms":1,"pid":5}}` + "\n"))
	f.Add([]byte(`{"error":{"error":"boom","code":"internal"}}` + "\n"))
	f.Add([]byte(`{"stream":"other"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		const maxOut = 16
		res, err := readExecEvents(bytes.NewReader(b), maxOut, func(stream string, data []byte) {
			if stream != wire.StreamStdout && stream != wire.StreamStderr || len(data) > wire.ExecEventMaxData {
				t.Fatalf("bad event passed on: %q, %d bytes", stream, len(data))
			}
		})
		if err == nil && (len(res.Stdout) > maxOut || len(res.Stderr) > maxOut || res.ExitCode < 0 || res.ExitCode > 255) {
			t.Fatalf("accepted invalid result %+v", res)
		}
	})
}
