package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PostgreSQL runs in its own processes (the postmaster the bench started
// and its backends), whose CPU getrusage in dc-api's process does not see.
// pgCPU reads it from /proc: the run time of the postmaster (a child of
// this process leading its own process group) and of its children (the
// backends and auxiliary processes, each in its own session) from
// /proc/PID/schedstat (nanoseconds), plus the postmaster's cutime+cstime
// (clock ticks) for children that exited.

// clockTick is the unit of /proc/PID/stat's times (USER_HZ: 100 on Linux).
const clockTick = 10 * time.Millisecond

// procStat is what pgCPU needs of /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	comm            string
	cutime, cstime  int64 // ticks
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no (comm)", pid)
	}
	f := strings.Fields(s[close+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	st := procStat{pid: pid, comm: s[open+1 : close]}
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return st, nil
}

func allProcs() []procStat {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []procStat
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// schedRuntime is the CPU time of pid's main thread (all of a
// single-threaded PostgreSQL process) in nanoseconds.
func schedRuntime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/%d/schedstat is empty", pid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err
}

// pgCPU returns the CPU time used so far by the PostgreSQL cluster this
// process started and the number of processes counted; ok is false if
// there is none or /proc cannot tell.
func pgCPU() (cpu time.Duration, procs int, ok bool) {
	all := allProcs()
	self := os.Getpid()
	master := 0
	for _, p := range all {
		if p.ppid == self && p.pgrp == p.pid && p.comm == "postgres" {
			master = p.pid
		}
	}
	if master == 0 {
		return 0, 0, false
	}
	for _, p := range all {
		if p.pid != master && p.ppid != master {
			continue
		}
		rt, err := schedRuntime(p.pid)
		if err != nil {
			if os.IsNotExist(err) {
				continue // exited meanwhile; its time shows in the postmaster's cutime
			}
			return 0, 0, false
		}
		cpu += rt
		procs++
		if p.pid == master {
			cpu += time.Duration(p.cutime+p.cstime) * clockTick
		}
	}
	return cpu, procs, true
}
