package svcmain

import (
	"flag"
	"fmt"
	"strings"
)

// EnvName is the environment variable standing in for a flag: prefix + the flag name
// upper-cased with dashes as underscores (GATEHOUSE_AUTH_ + etcd-endpoints =
// GATEHOUSE_AUTH_ETCD_ENDPOINTS).
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag of fs not given on the command line from its environment variable
// (EnvName(prefix, name)) when that is set and not empty. A value the flag cannot parse is an
// error naming the variable. It runs after fs.Parse, so the command line always wins.
func ApplyEnv(fs *flag.FlagSet, prefix string, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := EnvName(prefix, f.Name)
		if v := getenv(name); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, serr)
			}
		}
	})
	return err
}

// Import registers on dst the flags that register declares (a service config's
// RegisterFlags), except those named in skip. The imported flags write into the same
// variables, so their defaults are defined once, by the service. A name dst already has is
// imported as rename+"-"+name (for example audit-max-batch) when rename is not empty, and
// skipped otherwise. It returns the names under which flags were imported.
func Import(dst *flag.FlagSet, register func(*flag.FlagSet), rename string, skip ...string) []string {
	src := flag.NewFlagSet("import", flag.ContinueOnError)
	register(src)
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	var names []string
	src.VisitAll(func(f *flag.Flag) {
		if skipped[f.Name] {
			return
		}
		name := f.Name
		if dst.Lookup(name) != nil {
			if rename == "" {
				return
			}
			name = rename + "-" + name
			if dst.Lookup(name) != nil {
				return
			}
		}
		dst.Var(f.Value, name, f.Usage)
		names = append(names, name)
	})
	return names
}

// ImportPrefixed registers on dst only the flags named in only that register declares, each
// as prefix+"-"+name whether or not it clashes: flags whose bare name would read as the
// importing command's own (gatehouse up's --audit-store, not --store). The flags write into
// the service's variables, as with Import. It returns the names registered.
func ImportPrefixed(dst *flag.FlagSet, register func(*flag.FlagSet), prefix string, only ...string) []string {
	src := flag.NewFlagSet("import", flag.ContinueOnError)
	register(src)
	var names []string
	for _, n := range only {
		f := src.Lookup(n)
		if f == nil {
			panic("svcmain.ImportPrefixed: no flag " + n)
		}
		name := prefix + "-" + n
		dst.Var(f.Value, name, f.Usage)
		names = append(names, name)
	}
	return names
}
