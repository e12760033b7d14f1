// Command portserver plays a bot's web app in the port tests and the port
// benchmark: run inside a workspace (or, for the benchmark's baseline, on
// the host), it serves HTTP and a WebSocket echo on the address it is
// given, so a test sees exactly what reached the app through berth.
//
//	GET  / /hello  "hello from portserver"
//	ANY  /echo     JSON: method, path, query, host, headers, body length
//	GET  /redirect 302 to /hello (an absolute path, as apps answer)
//	GET  /ws       WebSocket: every message comes back as it was sent
//
// Usage: portserver ADDR (for example 127.0.0.1:8080)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

// Echo is what /echo answers.
type Echo struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	RawQuery string              `json:"raw_query"`
	Host     string              `json:"host"`
	Header   map[string][]string `json:"header"`
	BodyLen  int64               `json:"body_len"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: portserver ADDR")
		os.Exit(2)
	}
	mux := http.NewServeMux()
	hello := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from portserver") }
	mux.HandleFunc("GET /{$}", hello)
	mux.HandleFunc("GET /hello", hello)
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Echo{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Host: r.Host, Header: r.Header, BodyLen: n})
	})
	mux.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/hello", http.StatusFound)
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		// Any origin: the app sits behind berth, which checks origins.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, data); err != nil {
				return
			}
		}
	})
	fmt.Println("portserver listening on", os.Args[1])
	if err := http.ListenAndServe(os.Args[1], mux); err != nil {
		fmt.Fprintln(os.Stderr, "portserver:", err)
		os.Exit(1)
	}
}
