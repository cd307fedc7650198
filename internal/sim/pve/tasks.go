package pve

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// maxFinishedTasks bounds the task history kept in the state file.
const maxFinishedTasks = 300

// startTask creates a running task on node; eff runs when it finishes.
// Injected task failures and node outages fire here.
func (st *State) startTask(node, typ, id, user string, dur Duration, eff *Effect) *Task {
	now := st.Now()
	n := st.Nodes[node]
	pid := 100000 + int(st.nextSeq()%800000)
	var pstart int64
	if n != nil {
		pstart = int64(now.Sub(n.BootedAt) / (10 * time.Millisecond))
	}
	upid := fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, pid, pstart, now.Unix(), typ, id, user)
	if eff == nil {
		eff = &Effect{}
	}
	for i := range st.Faults.TaskFailures {
		f := &st.Faults.TaskFailures[i]
		if f.Type == typ && f.Count > 0 {
			eff.Fail = f.ExitStatus
			f.Count--
			if f.Count == 0 {
				st.Faults.TaskFailures = append(st.Faults.TaskFailures[:i], st.Faults.TaskFailures[i+1:]...)
			}
			break
		}
	}
	grace := max(10*dur.D(), 20*time.Millisecond)
	t := &Task{
		UPID: upid, Node: node, PID: pid, PStart: pstart, StartTime: now.Unix(), Type: typ, ID: id, User: user,
		Status: "running", DueAt: now.Add(dur.D()), FinishBy: now.Add(dur.D() + grace), PollsLeft: st.Timing.TaskPolls, Effect: eff,
	}
	st.Tasks[upid] = t
	st.pruneTasks()
	target := ""
	if eff.Clone != nil {
		target = eff.Clone.Target
	}
	for i, o := range st.Faults.Outages {
		if o.OnTask != typ || (o.Node != node && o.Node != target) || st.Nodes[o.Node] == nil {
			continue
		}
		st.Faults.Outages = append(st.Faults.Outages[:i], st.Faults.Outages[i+1:]...)
		if o.Duration > 0 {
			st.Nodes[o.Node].OfflineUntil = now.Add(o.Duration.D())
			st.Nodes[o.Node].OfflineSince = now
		} else {
			st.SetNodeOffline(o.Node, o.PowerLoss)
		}
		break
	}
	return t
}

// finishTask applies a task's effect and marks it stopped.
func (st *State) finishTask(t *Task) {
	exit := "OK"
	switch {
	case t.Effect != nil && st.cutOff(t.Node):
		// The node lost quorum: its cluster file system is read-only, so
		// the worker cannot write the result. A clone's cleanup cannot
		// remove its temporary config either: the VM stays locked.
		exit = ErrNoQuorum().Msg
		if t.Type == "qmclone" {
			exit = "clone failed: " + exit
		}
	case t.Effect != nil:
		if err := st.applyEffect(t); err != nil {
			exit = err.Error()
		}
	}
	t.Status = "stopped"
	t.ExitStatus = exit
	t.EndTime = st.Now().Unix()
	if exit == "OK" {
		t.Log = append(t.Log, "TASK OK")
	} else {
		t.Log = append(t.Log, "TASK ERROR: "+exit)
	}
	t.Effect = nil
	t.PollsLeft = 0
}

// held reports whether t is held running (Faults.HeldTasks).
func (st *State) held(t *Task) bool { return slices.Contains(st.Faults.HeldTasks, t.Type) }

// cutOff reports whether node is running but cut off from a cluster
// (offline in corosync without having lost power): it has no quorum.
func (st *State) cutOff(node string) bool {
	n := st.Nodes[node]
	return n != nil && n.Down && !n.PoweredOff && len(st.Nodes) > 1
}

// advance finishes every running task that is due and needs no more polls
// (or that nobody polled until FinishBy).
func (st *State) advance() {
	now := st.Now()
	var due []*Task
	for _, t := range st.Tasks {
		if t.Status == "running" && !now.Before(t.DueAt) && (t.PollsLeft <= 0 || !now.Before(t.FinishBy)) && !st.held(t) {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].DueAt.Equal(due[j].DueAt) {
			return due[i].DueAt.Before(due[j].DueAt)
		}
		return due[i].PID < due[j].PID
	})
	for _, t := range due {
		st.finishTask(t)
	}
}

func (st *State) pruneTasks() {
	var done []*Task
	for _, t := range st.Tasks {
		if t.Status == "stopped" {
			done = append(done, t)
		}
	}
	if len(done) <= maxFinishedTasks {
		return
	}
	sort.Slice(done, func(i, j int) bool { return done[i].EndTime < done[j].EndTime })
	for _, t := range done[:len(done)-maxFinishedTasks] {
		delete(st.Tasks, t.UPID)
	}
}

// TaskStatus is one poll of a task's status (GET .../tasks/{upid}/status):
// it uses up one of the task's "running" polls, finishes it when due, and
// returns it. The task's owner may always read it; others need Sys.Audit
// on the node.
func (st *State) TaskStatus(actor, node, upid string) (*Task, error) {
	t := st.Tasks[upid]
	if t == nil || t.Node != node {
		return nil, Fail("no such task")
	}
	if t.User != actor {
		if err := st.Check(actor, "/nodes/"+node, "Sys.Audit"); err != nil {
			return nil, err
		}
	}
	if t.Status == "running" && !st.held(t) {
		if t.PollsLeft > 0 {
			t.PollsLeft--
		} else if !st.Now().Before(t.DueAt) {
			st.finishTask(t)
		}
	}
	return t, nil
}

// FinishTask finishes a running task at once (synchronous CLI tools).
func (st *State) FinishTask(upid string) (*Task, error) {
	t := st.Tasks[upid]
	if t == nil {
		return nil, Fail("no such task")
	}
	if t.Status == "running" {
		st.finishTask(t)
	}
	return t, nil
}

// TaskStatusData is the JSON object PVE returns for a task's status.
func TaskStatusData(t *Task) map[string]any {
	d := map[string]any{
		"upid": t.UPID, "node": t.Node, "pid": t.PID, "pstart": t.PStart, "starttime": t.StartTime,
		"type": t.Type, "id": t.ID, "user": t.User, "status": t.Status,
	}
	if user, tok := SplitAuthID(t.User); tok != "" {
		d["user"] = user
		d["tokenid"] = tok
	}
	if t.Status == "stopped" {
		d["exitstatus"] = t.ExitStatus
		d["endtime"] = t.EndTime
	}
	return d
}

// TaskListData is a task's entry in GET /nodes/{node}/tasks.
func TaskListData(t *Task) map[string]any {
	d := map[string]any{
		"upid": t.UPID, "node": t.Node, "pid": t.PID, "pstart": t.PStart, "starttime": t.StartTime,
		"type": t.Type, "id": t.ID, "user": t.User,
	}
	if t.Status == "stopped" {
		d["status"] = t.ExitStatus
		d["endtime"] = t.EndTime
	}
	return d
}

// TaskLogData is GET .../tasks/{upid}/log: [{n, t}].
func TaskLogData(t *Task) []map[string]any {
	out := make([]map[string]any, 0, len(t.Log))
	for i, l := range t.Log {
		out = append(out, map[string]any{"n": i + 1, "t": l})
	}
	return out
}

// Tasks lists a node's tasks, newest first.
func (st *State) NodeTasks(node string) []*Task {
	var out []*Task
	for _, t := range st.Tasks {
		if t.Node == node {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].StartTime != out[j].StartTime {
			return out[i].StartTime > out[j].StartTime
		}
		return out[i].PID > out[j].PID
	})
	return out
}
