package agent

import "net/http"

// routeFiles registers the file endpoints.
func (s *server) routeFiles(mux *http.ServeMux) {}
