// Package pve is the state of a simulated Proxmox VE cluster: nodes,
// storages with capacity, bridges, VMs and templates with their config keys,
// tasks with UPIDs, users, groups, roles, API tokens, ACLs and pools.
//
// No Proxmox host exists where dc-agent is built and tested, so two
// simulators stand in for one and share this package:
//
//   - the HTTPS API (internal/sim/pveapi, cmd/pve-sim), which go-proxmox talks
//     to exactly as it talks to a real node;
//   - the host CLI tools (qm, pveum, pvesh, pvesm, pveversion, ...), which
//     `dc-agent setup proxmox` runs over SSH.
//
// Both run as separate processes, so the state lives in a directory
// (state.json plus the node certificates) and every access goes through
// Store.Update, which takes an exclusive flock on state.lock, reads the
// file, runs the caller's function on a *State and writes the result back
// atomically when it changed. A function that returns an error changes
// nothing. A template created with `qm` is therefore clonable through the
// API, and a token created with `pveum` authenticates against the API with
// exactly the privileges its role grants.
//
// The operations on *State (Clone, SetConfig, Start, AddToken, ModifyACL,
// ...) take the acting auth id ("root@pam" for the CLI tools, the API
// token's "user@realm!name" for API calls) and check privileges the way
// qemu-server and pve-access-control do, including the PVE 8 / PVE 9
// difference (VM.Monitor vs VM.GuestAgent.Audit). They return *Error, which
// carries the HTTP status real PVE would answer with (500 with the message
// as the reason phrase, 400 with per-parameter errors, 403 permission
// check failed) so the API and the CLI can both render it faithfully.
//
// Long operations (clone, start, resize, destroy, ...) are tasks. A task is
// created "running" and finishes lazily, at the first state access after
// its duration (State.Timing) has passed and after it was polled
// Timing.TaskPolls times (a task nobody polls finishes a little later on
// its own, as PVE workers do); only then are its effects applied (a clone's VM
// stays locked "clone" until the task ends). The CLI, which is synchronous
// like the real tools, finishes its tasks at once with Store.RunTask.
// Failures are injected through State.Faults: failing tasks (clone failure,
// lock timeout), HTTP errors, a guest agent that never starts, node outages;
// a full storage is simply a storage whose capacity is used up.
//
// Quirks reproduced on purpose (BACKENDS.md §1): string nextid, full UPIDs,
// no `template` key on ordinary VMs, guest agent errors until the guest has
// booted, destroy refused while running, sshkeys that must already be
// URL-encoded, linked-clone parameter rules, unknown parameters rejected.
package pve
