package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/decent-stuff/dc-agent/agent/status"
)

// metrics is the optional Prometheus endpoint (agent.metrics_listen).
// Gauges and counters are read from the live State at scrape time, so
// they always agree with `dc-agent status`.
type metrics struct {
	srv              *http.Server
	done             chan struct{}
	provisionSeconds *prometheus.HistogramVec
}

func (a *Agent) startMetrics(addr string) (*metrics, error) {
	reg := prometheus.NewRegistry()
	m := &metrics{
		done: make(chan struct{}),
		provisionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dcagent_provision_duration_seconds",
			Help:    "Time from taking a contract to its instance being ready.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800},
		}, []string{"provisioner"}),
	}
	reg.MustRegister(m.provisionSeconds, &stateCollector{a: a}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w (change or remove agent.metrics_listen)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics listener stopped", "err", err)
		}
	}()
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return m, nil
}

func (m *metrics) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}

var (
	descOnline      = prometheus.NewDesc("dcagent_online", "1 while the last heartbeat was accepted within the online window.", nil, nil)
	descLastHB      = prometheus.NewDesc("dcagent_last_heartbeat_timestamp_seconds", "When the last heartbeat was accepted.", nil, nil)
	descLastPoll    = prometheus.NewDesc("dcagent_last_poll_timestamp_seconds", "When pending contracts were last fetched.", nil, nil)
	descActive      = prometheus.NewDesc("dcagent_active_contracts", "Contracts the API lists as live.", nil, nil)
	descWork        = prometheus.NewDesc("dcagent_work", "Contracts being worked on, by step.", []string{"step"}, nil)
	descOutbox      = prometheus.NewDesc("dcagent_outbox_reports", "Reports waiting for the API.", nil, nil)
	descTotal       = prometheus.NewDesc("dcagent_events_total", "Outcomes since start.", []string{"outcome"}, nil)
	descLoop        = prometheus.NewDesc("dcagent_loop_state", "1 for the state each loop is in.", []string{"loop", "state"}, nil)
	descLoopFailing = prometheus.NewDesc("dcagent_loop_consecutive_failures", "Consecutive failures of each loop.", []string{"loop"}, nil)
	descInFlight    = prometheus.NewDesc("dcagent_provisioner_in_flight", "Provisions running per backend.", []string{"provisioner"}, nil)
)

type stateCollector struct{ a *Agent }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOnline, descLastHB, descLastPoll, descActive, descWork, descOutbox, descTotal, descLoop, descLoopFailing, descInFlight} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.State()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ts := func(t *time.Time) float64 {
		if t == nil {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	g(descOnline, b2f(st.Online))
	g(descLastHB, ts(st.LastHeartbeat))
	g(descLastPoll, ts(st.LastPoll))
	g(descActive, float64(st.Counts.Active))
	g(descWork, float64(st.Counts.Queued), status.StepQueued)
	g(descWork, float64(st.Counts.Provisioning), status.StepProvisioning)
	g(descOutbox, float64(st.Counts.Outbox))
	for _, x := range []struct {
		name string
		v    int
	}{{"provisioned", st.Counts.Provisioned}, {"failed", st.Counts.Failed}, {"terminated", st.Counts.Terminated}, {"health_checks", st.Counts.HealthChecks}} {
		ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(x.v), x.name)
	}
	for _, l := range st.Loops {
		for _, s := range []string{status.LoopRunning, status.LoopBackoff, status.LoopStopped} {
			g(descLoop, b2f(l.State == s), l.Name, s)
		}
		g(descLoopFailing, float64(l.Failures), l.Name)
	}
	for _, p := range st.Provisioners {
		g(descInFlight, float64(p.InFlight), p.Type)
	}
}
