package monitor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
)

// plainHelp is the line-mode prompt.
const plainHelp = "keys (then Enter): r refresh, l logs, d doctor, q quit (the service keeps running)"

// runPlain is the monitor for terminals that cannot place the cursor
// (TERM=dumb): the same model, printed as lines. It prints the screen once
// the agent (or its absence) and the API have answered, then every event as
// it arrives; r, l, d and q are read as lines from Input.
func runPlain(ctx context.Context, m *Model) error {
	out := m.o.Output
	m.width, m.height, m.plain = 80, 1000, true // everything, no cut
	m.resizeViews()
	msgs := make(chan tea.Msg, 64)
	var exec func(tea.Cmd)
	exec = func(cmd tea.Cmd) {
		if cmd == nil {
			return
		}
		go func() {
			msg := cmd()
			if b, ok := msg.(tea.BatchMsg); ok {
				for _, c := range b {
					exec(c)
				}
				return
			}
			select {
			case msgs <- msg:
			case <-m.ctx.Done():
			}
		}()
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(m.o.Input)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-m.ctx.Done():
				return
			}
		}
		close(lines)
	}()
	exec(m.Init())

	printed := false // the first full screen
	printScreen := func() {
		fmt.Fprintln(out, strings.TrimRight(m.mainView(), "\n "))
		fmt.Fprintln(out, plainHelp)
		printed = true
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				lines = nil // stdin closed: keep following events until ctx ends
				continue
			}
			switch l {
			case "q", "quit", "exit":
				return nil
			case "r", "":
				printScreen()
			case "l":
				exec(m.loadLogs())
			case "d":
				fmt.Fprintln(out, "running dc-agent doctor…")
				exec(m.runDoctor())
			default:
				fmt.Fprintln(out, plainHelp)
			}
		case msg := <-msgs:
			if msg == nil {
				continue
			}
			if _, ok := msg.(tea.QuitMsg); ok {
				return nil
			}
			inner := msg
			if fs, ok := msg.(fromStream); ok {
				inner = fs.msg
			}
			wasConnected := m.connected
			_, cmd := m.Update(msg)
			exec(cmd)
			switch inner := inner.(type) {
			case eventMsg:
				if printed {
					fmt.Fprintln(out, m.eventLine(inner.ev))
				}
			case streamDownMsg:
				if printed && wasConnected {
					fmt.Fprintln(out, "(the agent's event stream closed; reconnecting)")
				}
			case logsMsg:
				if m.logNote != "" {
					fmt.Fprintln(out, m.logNote)
				}
				writeBlock(out, m.logsText())
			case doctorMsg:
				writeBlock(out, m.doctorText())
			}
			// The first screen waits for both sources (or their failure).
			if !printed && (m.state != nil || m.stateErr != nil) && (m.o.API == nil || !m.apiBusy) {
				printScreen()
			}
		}
	}
}

func writeBlock(w io.Writer, s string) {
	fmt.Fprintln(w, strings.TrimRight(s, "\n"))
}
