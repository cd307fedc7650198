package wizard

import (
	"strings"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
)

// field is a labelled text input with a live check, or (with options) a
// choice of one option, switched with ←/→ or space.
type field struct {
	label string
	help  string
	input textinput.Model
	check func(string) error
	// options make the field a choice; choice is the chosen one.
	options []string
	choice  int
	// hidden fields are neither shown, focused nor checked.
	hidden bool
}

func newField(label, value, placeholder, help string, check func(string) error) field {
	ti := textinput.New()
	ti.Prompt = ""
	ti.Placeholder = placeholder
	ti.CharLimit = 4096
	ti.Width = 44
	// A static cursor: no blink timer, so frames only change on input.
	ti.Cursor.SetMode(cursor.CursorStatic)
	ti.SetValue(value)
	return field{label: label, help: help, input: ti, check: check}
}

func newChoice(label, help string, options ...string) field {
	return field{label: label, help: help, options: options}
}

func (f *field) value() string {
	if f.options != nil {
		return f.options[f.choice]
	}
	return strings.TrimSpace(f.input.Value())
}

func (f *field) err() error {
	if f.check == nil || f.hidden {
		return nil
	}
	return f.check(f.value())
}

// form is a column of fields with one focused.
type form struct {
	fields []field
	focus  int
	// tried: the user pressed enter once; from then on show every error.
	tried bool
}

func (f *form) focusCmd() tea.Cmd {
	for i := range f.fields {
		switch {
		case f.fields[i].options != nil:
		case i == f.focus:
			f.fields[i].input.Focus()
		default:
			f.fields[i].input.Blur()
		}
	}
	return nil
}

func (f *form) move(d int) {
	for range f.fields {
		f.focus = (f.focus + d + len(f.fields)) % len(f.fields)
		if !f.fields[f.focus].hidden {
			break
		}
	}
	f.focusCmd()
}

// update handles navigation and typing; submit is true on enter on the
// last field or when every field is valid.
func (f *form) update(msg tea.Msg) (cmd tea.Cmd, submit bool) {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch k.String() {
		case "tab", "down":
			f.move(1)
			return nil, false
		case "shift+tab", "up":
			f.move(-1)
			return nil, false
		case "enter":
			f.tried = true
			first := f.firstError()
			if first < 0 {
				return nil, true
			}
			// Show the first field that needs an answer.
			f.focus = first
			f.focusCmd()
			return nil, false
		}
	}
	if len(f.fields) == 0 {
		return nil, false
	}
	if fl := &f.fields[f.focus]; fl.options != nil {
		if k, ok := msg.(tea.KeyMsg); ok {
			switch k.String() {
			case "right", "l", " ":
				fl.choice = (fl.choice + 1) % len(fl.options)
			case "left", "h":
				fl.choice = (fl.choice + len(fl.options) - 1) % len(fl.options)
			}
		}
		return nil, false
	}
	f.fields[f.focus].input, cmd = f.fields[f.focus].input.Update(msg)
	return cmd, false
}

func (f *form) firstError() int {
	for i := range f.fields {
		if f.fields[i].err() != nil {
			return i
		}
	}
	return -1
}

// view renders label, input and (live) error of each field.
func (f *form) view() string {
	lw := f.labelWidth()
	var b strings.Builder
	for i := range f.fields {
		fl := &f.fields[i]
		if fl.hidden {
			continue
		}
		cur := "  "
		if i == f.focus {
			cur = st.sel.Render("> ")
		}
		in := fl.input.View()
		if fl.options != nil {
			var opts []string
			for j, o := range fl.options {
				mark := "( ) "
				if j == fl.choice {
					mark = st.sel.Render("(•) ")
				}
				opts = append(opts, mark+o)
			}
			in = strings.Join(opts, "  ")
		}
		b.WriteString(cur + padRight(fl.label, lw) + "  " + in + "\n")
		err := fl.err()
		show := err != nil && (f.tried || (i == f.focus && fl.value() != "") || (i != f.focus && fl.value() != ""))
		switch {
		case show:
			b.WriteString(strings.Repeat(" ", lw+4) + st.bad.Render(markBad+" ") + err.Error() + "\n")
		case i == f.focus && fl.help != "":
			b.WriteString(strings.Repeat(" ", lw+4) + st.dim.Render(fl.help) + "\n")
		}
	}
	return b.String()
}

func (f *form) labelWidth() int {
	lw := 0
	for _, fl := range f.fields {
		lw = max(lw, len(fl.label))
	}
	return lw
}

// layout sizes the inputs to the terminal width (on resize, not in View).
func (f *form) layout(w int) {
	lw := f.labelWidth()
	for i := range f.fields {
		f.fields[i].input.Width = max(10, w-lw-5)
	}
}

func padRight(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}
