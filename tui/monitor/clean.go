package monitor

import (
	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/doctor"
)

// Everything the monitor draws from outside (the socket, the API, error
// texts of backends) is cleaned as it arrives, so View never sends the
// terminal a control sequence it did not make itself.

func cleanState(st status.State) status.State {
	for _, p := range []*string{&st.Version, &st.Phase, &st.ConfigPath, &st.Endpoint, &st.Provider, &st.AgentPubkey, &st.Line} {
		*p = oneLine(*p)
	}
	st.Loops = append([]status.Loop(nil), st.Loops...)
	for i := range st.Loops {
		l := &st.Loops[i]
		l.Name, l.State, l.LastError = oneLine(l.Name), oneLine(l.State), oneLine(l.LastError)
	}
	st.Provisioners = append([]status.Provisioner(nil), st.Provisioners...)
	for i := range st.Provisioners {
		p := &st.Provisioners[i]
		p.Type = oneLine(p.Type)
		p.Features = append([]string(nil), p.Features...)
		for j := range p.Features {
			p.Features[j] = oneLine(p.Features[j])
		}
	}
	st.Work = append([]status.Work(nil), st.Work...)
	for i := range st.Work {
		w := &st.Work[i]
		w.ContractID, w.Provisioner, w.Step, w.Detail = oneLine(w.ContractID), oneLine(w.Provisioner), oneLine(w.Step), oneLine(w.Detail)
	}
	st.Gateways = append([]status.Gateway(nil), st.Gateways...)
	for i := range st.Gateways {
		g := &st.Gateways[i]
		g.ContractID, g.Subdomain, g.PublicIP, g.InternalIP, g.State = oneLine(g.ContractID), oneLine(g.Subdomain), oneLine(g.PublicIP), oneLine(g.InternalIP), oneLine(g.State)
	}
	st.Problems = append([]status.Problem(nil), st.Problems...)
	for i := range st.Problems {
		p := &st.Problems[i]
		p.Loop, p.Message, p.Fix = oneLine(p.Loop), oneLine(p.Message), oneLine(p.Fix)
	}
	return st
}

func cleanEvent(ev status.Event) status.Event {
	ev.Kind, ev.Level, ev.Loop, ev.ContractID, ev.Message = oneLine(ev.Kind), oneLine(ev.Level), oneLine(ev.Loop), oneLine(ev.ContractID), oneLine(ev.Message)
	return ev
}

func cleanAgentStatus(a dcapi.AgentStatus) dcapi.AgentStatus {
	a.ProviderPubkey = oneLine(a.ProviderPubkey)
	if a.Version != nil {
		v := oneLine(*a.Version)
		a.Version = &v
	}
	if a.ProvisionerType != nil {
		v := oneLine(*a.ProvisionerType)
		a.ProvisionerType = &v
	}
	return a
}

func cleanReport(r doctor.Report) doctor.Report {
	r.Findings = append([]doctor.Finding(nil), r.Findings...)
	for i := range r.Findings {
		f := &r.Findings[i]
		f.Check, f.Message, f.Fix = oneLine(f.Check), oneLine(f.Message), oneLine(f.Fix)
		f.Status = doctor.Status(oneLine(string(f.Status)))
	}
	return r
}
