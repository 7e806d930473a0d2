package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
)

// TestTheREADMEShowsTheDefaultsOfTheCode: every flag with an environment
// variable is in the README's configuration table, with the default the
// command line takes, which for all but the local stack's addresses comes
// from the components' setDefaults.
func TestTheREADMEShowsTheDefaultsOfTheCode(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // env -> default
	row := regexp.MustCompile("^\\| `--[^|]+\\| ([^|]+) \\| ([^|]+) \\|")
	code := regexp.MustCompile("`([^`]*)`")
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		envs, defaults := strings.Split(m[1], " / "), strings.Split(m[2], " / ")
		for i, env := range envs {
			d := ""
			if i < len(defaults) {
				if c := code.FindStringSubmatch(defaults[i]); c != nil {
					d = c[1]
				}
			}
			documented[strings.Trim(strings.TrimSpace(env), "`")] = d
		}
	}
	parser, err := kong.New(&cli{}, componentDefaults())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err = kong.Visit(parser.Model, func(n kong.Visitable, next kong.Next) error {
		if f, ok := n.(*kong.Flag); ok {
			for _, env := range f.Envs {
				if seen[env] || strings.HasPrefix(env, "KAPPA_LOADTEST_") {
					continue
				}
				seen[env] = true
				want, ok := documented[env]
				switch {
				case !ok:
					t.Errorf("flag --%s ($%s) is not in the README's configuration table", f.Name, env)
				case want != f.Default:
					t.Errorf("the README says $%s defaults to %q; the code says %q", env, want, f.Default)
				}
			}
		}
		return next(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	for env := range documented {
		if !seen[env] {
			t.Errorf("the README documents $%s, which no flag reads", env)
		}
	}
}

// TestSharedSettingsAgreeAcrossComponents: one flag sets the session and
// stall timeouts of processors and projectors, and the idempotency window
// of ingest and processors; their own defaults must agree.
func TestSharedSettingsAgreeAcrossComponents(t *testing.T) {
	proc := processor.Config{}.WithDefaults()
	proj := projector.Config{}.WithDefaults((*postgres.Store)(nil))
	in := ingest.IntakeConfig{}.WithDefaults()
	if proc.SessionTimeout != proj.SessionTimeout || proc.StallTimeout != proj.StallTimeout {
		t.Errorf("processor %s/%s and projector %s/%s session/stall timeouts differ", proc.SessionTimeout, proc.StallTimeout, proj.SessionTimeout, proj.StallTimeout)
	}
	if proc.IdempotencyWindow != in.IdempotencyWindow {
		t.Errorf("processor idempotency window %s, intake %s", proc.IdempotencyWindow, in.IdempotencyWindow)
	}
}
