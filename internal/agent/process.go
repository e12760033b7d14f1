package agent

import "net/http"

// routeProcesses registers exec, background process and terminal endpoints.
func (s *server) routeProcesses(mux *http.ServeMux) {}
