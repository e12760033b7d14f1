// Package metrics owns berth's Prometheus metrics: the registry, the tool
// call counters and latencies the tools report into, and gauges read from
// the rest of berth when scraped. It knows nothing of workspaces or MCP;
// callers hand it functions to read their state. A nil *Metrics records
// nothing, so code and tests without metrics need no special case.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is berth's registry.
type Metrics struct {
	reg          *prometheus.Registry
	toolCalls    *prometheus.CounterVec
	toolDuration *prometheus.HistogramVec
	log          *slog.Logger
}

// New returns a registry with the Go runtime and process collectors and
// the tool call metrics.
func New(log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_tool_calls_total",
			Help: "MCP tool calls by tool and outcome (ok, or error for results with isError). Tools of bots' own MCP servers count as tool=\"federated\".",
		}, []string{"tool", "outcome"}),
		toolDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_tool_call_duration_seconds",
			Help:    "MCP tool call latency by tool.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"tool"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.toolCalls, m.toolDuration,
	)
	return m
}

// ObserveToolCall records one tool call.
func (m *Metrics) ObserveToolCall(tool string, took time.Duration, failed bool) {
	if m == nil {
		return
	}
	outcome := "ok"
	if failed {
		outcome = "error"
	}
	m.toolCalls.WithLabelValues(tool, outcome).Inc()
	m.toolDuration.WithLabelValues(tool).Observe(took.Seconds())
}

// scrapeTimeout bounds the reads of berth's state behind one scrape.
const scrapeTimeout = 5 * time.Second

// GaugesFunc registers a gauge family whose values are read at each scrape:
// read returns a value per value of the one label. An error is logged and
// the family left out of that scrape, so one slow part never fails the
// others.
func (m *Metrics) GaugesFunc(name, help, label string, read func(context.Context) (map[string]float64, error)) {
	if m == nil {
		return
	}
	var labels []string
	if label != "" {
		labels = []string{label}
	}
	m.reg.MustRegister(&gaugesFunc{desc: prometheus.NewDesc(name, help, labels, nil), read: read, log: m.log, name: name})
}

type gaugesFunc struct {
	desc *prometheus.Desc
	read func(context.Context) (map[string]float64, error)
	log  *slog.Logger
	name string
}

func (g *gaugesFunc) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *gaugesFunc) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	values, err := g.read(ctx)
	if err != nil {
		g.log.Warn("metrics: cannot read", "metric", g.name, "err", err)
		return
	}
	for label, v := range values {
		if label == "" {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
			continue
		}
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, label)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)})
}
