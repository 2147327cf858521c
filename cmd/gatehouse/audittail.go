package main

import (
	"context"
	"fmt"
	"io"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

func auditTail(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit tail", "audit tail [FILTERS] [--from SEQ] [--json]", stderr)
	var f auditFlags
	f.register(fs, true)
	from := fs.Uint64("from", 0, "start at this sequence (0: the next record committed)")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		fs.Usage()
		return fmt.Errorf("audit tail: unexpected arguments %q", pos)
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return fmt.Errorf("audit tail: %w", err)
	}
	log, err := openAuditLog("audit tail", &f, getenv)
	if err != nil {
		return err
	}
	// A table cannot be aligned while rows keep coming: each batch is flushed as it is.
	p := newEntryPrinter(stdout, f.json)
	return log.tail(ctx, &auditv1.TailRequest{Filter: filter, FromSequence: *from}, func(entries []*auditv1.Entry) error {
		for _, e := range entries {
			if err := p.print(e); err != nil {
				return err
			}
		}
		return p.flush()
	})
}
