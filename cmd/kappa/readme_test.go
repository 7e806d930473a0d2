package main

import (
	"os"
	"regexp"
	"slices"
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
	documented := map[string][]string{} // env -> the defaults its row names
	row := regexp.MustCompile("^\\| `--[^|]+\\| ([^|]+) \\| ([^|]+) \\|")
	code := regexp.MustCompile("`([^`]*)`")
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		envs, defaults := strings.Split(m[1], " / "), strings.Split(m[2], " / ")
		for i, env := range envs {
			var named []string
			if i < len(defaults) {
				cell := strings.TrimSpace(defaults[i])
				if strings.HasPrefix(cell, "empty") || strings.HasPrefix(cell, "none") || strings.HasPrefix(cell, "off") {
					named = append(named, "")
				}
				for _, c := range code.FindAllStringSubmatch(cell, -1) {
					named = append(named, c[1])
				}
			}
			documented[strings.Trim(strings.TrimSpace(env), "`")] = named
		}
	}
	parser, err := kong.New(&cli{}, componentDefaults())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	checked := map[string]bool{} // env=default pairs
	err = kong.Visit(parser.Model, func(n kong.Visitable, next kong.Next) error {
		if f, ok := n.(*kong.Flag); ok {
			for _, env := range f.Envs {
				if checked[env+"="+f.Default] || strings.HasPrefix(env, "KAPPA_LOADTEST_") {
					continue
				}
				seen[env], checked[env+"="+f.Default] = true, true
				named, ok := documented[env]
				switch {
				case !ok:
					t.Errorf("flag --%s ($%s) is not in the README's configuration table", f.Name, env)
				case !slices.Contains(named, f.Default):
					t.Errorf("the README names %q as defaults of $%s; the code says %q", named, env, f.Default)
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

// TestHelpShowsNoSecret: secrets given through the environment do not
// reach --help, which prints defaults, not values.
func TestHelpShowsNoSecret(t *testing.T) {
	for _, env := range []string{"KAPPA_KAFKA_SASL_PASSWORD", "KAPPA_CLICKHOUSE_PASSWORD", "KAPPA_POSTGRES_PASSWORD"} {
		t.Setenv(env, "hunter2-"+env)
	}
	for _, cmd := range []string{"process", "ingest", "dev", "migrate"} {
		var out strings.Builder
		parser, err := kong.New(&cli{}, componentDefaults(), kong.Writers(&out, &out), kong.Exit(func(int) {}))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = parser.Parse([]string{cmd, "--help"})
		if out.Len() == 0 {
			t.Fatalf("%s --help printed nothing", cmd)
		}
		if strings.Contains(out.String(), "hunter2") {
			t.Errorf("%s --help shows a secret", cmd)
		}
	}
}
