package cedarpolicy

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Problem is one thing wrong with a bundle: a file that does not parse, a policy that does
// not match the schema, a reused id. Line and Column are 1-based, and 0 when cedar-go gives
// no position (a schema that does not resolve; a file name).
type Problem struct {
	File         string
	Line, Column int
	Message      string
}

// String is "FILE:LINE:COL: message", the form editors and CI annotate from; "FILE: message"
// without a position.
func (p Problem) String() string {
	switch {
	case p.File == "":
		return p.Message
	case p.Line == 0:
		return p.File + ": " + p.Message
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, max(p.Column, 1), p.Message)
}

// Error is New's error: the problems of a bundle, in file order.
type Error struct {
	Problems []Problem
}

// Error lists the problems, one a line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// maxProblems bounds what one bundle reports: past it, the rest are counted.
const maxProblems = 100

type problems struct {
	list    []Problem
	dropped int
}

func (ps *problems) add(p Problem) {
	p.Message = truncate(p.Message)
	if len(ps.list) == maxProblems {
		ps.dropped++
		return
	}
	ps.list = append(ps.list, p)
}

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	// In file order, then by position (problems without a file, the bundle's own, first),
	// then by message: cedar-go reports one policy's problems in no fixed order, and the same
	// bundle should read the same on every run.
	list := slices.SortedFunc(slices.Values(ps.list), func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column), cmp.Compare(a.Message, b.Message))
	})
	if ps.dropped > 0 {
		list = append(list, Problem{Message: fmt.Sprintf("and %d more problems", ps.dropped)})
	}
	return &Error{Problems: list}
}

// cedar-go's policy parser names positions as "<input>:LINE:COL" whatever the file name.
var inputPos = regexp.MustCompile(`\s*<input>:(\d+):(\d+):?`)

// parseProblem places a policy parse error at the position its text names.
func parseProblem(file string, err error) Problem {
	msg := err.Error()
	m := inputPos.FindStringSubmatchIndex(msg)
	if m == nil {
		return Problem{File: file, Message: msg}
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	return Problem{File: file, Line: line, Column: col, Message: msg[:m[0]] + msg[m[1]:]}
}

// schemaPos is how cedar-go's schema parser starts its errors: "FILE:LINE:COL: ".
var schemaPos = regexp.MustCompile(`^(\d+):(\d+): `)

// schemaProblem places a schema parse error at the position its text names.
func schemaProblem(file string, err error) Problem {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, file+":"); ok {
		if m := schemaPos.FindStringSubmatch(rest); m != nil {
			line, _ := strconv.Atoi(m[1])
			col, _ := strconv.Atoi(m[2])
			return Problem{File: file, Line: line, Column: col, Message: rest[len(m[0]):]}
		}
	}
	return Problem{File: file, Message: "parse schema: " + msg}
}

// flatten lists the errors an errors.Join holds (recursively), or err itself.
func flatten(err error) []error {
	var j interface{ Unwrap() []error }
	if !errors.As(err, &j) {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// maxMessageBytes bounds one problem's message: cedar-go spells out whole types, which a
// hostile bundle can make as large as itself.
const maxMessageBytes = 1024

// truncate cuts msg to maxMessageBytes at a rune boundary.
func truncate(msg string) string {
	if len(msg) <= maxMessageBytes {
		return msg
	}
	cut := maxMessageBytes
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + " …(truncated)"
}

// MaxNesting bounds how deeply brackets, braces and parentheses nest in a policy or schema
// file. cedar-go's validator takes time more than linear in the nesting of records, so a
// small bundle could otherwise hold a replica for minutes; real policies nest a handful deep.
const MaxNesting = 64

// checkNesting finds the first place where brackets nest deeper than MaxNesting, skipping
// string literals and // comments (the only kinds in Cedar's policy and schema syntax).
func checkNesting(file string, content []byte) (Problem, bool) {
	depth, line, col := 0, 1, 0
	inString, escaped, inComment := false, false, false
	for i := 0; i < len(content); i++ {
		c := content[i]
		col++
		if c == '\n' {
			line, col, inComment = line+1, 0, false
			continue
		}
		switch {
		case inComment:
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '/' && i+1 < len(content) && content[i+1] == '/':
			inComment = true
		case c == '(' || c == '[' || c == '{':
			if depth++; depth > MaxNesting {
				return Problem{File: file, Line: line, Column: col, Message: fmt.Sprintf("nested more than %d deep", MaxNesting)}, true
			}
		case c == ')' || c == ']' || c == '}':
			depth = max(depth-1, 0)
		}
	}
	return Problem{}, false
}
