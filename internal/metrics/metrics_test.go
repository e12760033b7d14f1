package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, body)
	}
	return string(body)
}

func TestMetrics(t *testing.T) {
	m := New(nil)
	m.ObserveToolCall("exec", 30*time.Millisecond, false)
	m.ObserveToolCall("exec", time.Second, true)
	m.GaugesFunc("test_things", "Things by kind.", "kind", func(context.Context) (map[string]float64, error) {
		return map[string]float64{"a": 2, "b": 0}, nil
	})
	m.GaugesFunc("test_up", "Up.", "", func(context.Context) (map[string]float64, error) {
		return map[string]float64{"": 1}, nil
	})
	m.GaugesFunc("test_broken", "Fails to read.", "kind", func(context.Context) (map[string]float64, error) {
		return nil, errors.New("down")
	})
	body := scrape(t, m)
	for _, want := range []string{
		"berth_tool_calls_total{outcome=\"ok\",tool=\"exec\"} 1\n",
		"berth_tool_calls_total{outcome=\"error\",tool=\"exec\"} 1\n",
		"berth_tool_call_duration_seconds_bucket{tool=\"exec\",le=\"0.05\"} 1\n",
		"berth_tool_call_duration_seconds_count{tool=\"exec\"} 2\n",
		"test_things{kind=\"a\"} 2\n",
		"test_things{kind=\"b\"} 0\n",
		"test_up 1\n",
		"\ngo_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	// A family that cannot be read is left out; the others still come.
	if strings.Contains(body, "test_broken{") {
		t.Errorf("a family that failed to read was reported")
	}
}
