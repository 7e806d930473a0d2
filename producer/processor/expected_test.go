package processor_test

import (
	"testing"

	"github.com/kappa-cqrs/kappa/schemas"
)

// expecting returns cmd with an expected version.
func expecting(cmd command, version int64) command {
	cmd.env.ExpectedVersion = &version
	return cmd
}

// TestExpectedVersions: a command that states the version it was decided
// against is rejected with version_conflict when its aggregate has moved
// on, including after a restart, when the version is known only from the
// events topic; a conflict writes no event.
func TestExpectedVersions(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(t, "a")
	first := expecting(addProduct(0, "cart-1", "p1"), 0)    // must not exist yet: accepted, v1
	again := expecting(addProduct(0, "cart-1", "p2"), 0)    // exists now: conflict
	second := expecting(addProduct(0, "cart-1", "p3"), 1)   // at v1: accepted, v2
	stale := expecting(addProduct(0, "cart-1", "p4"), 1)    // at v2: conflict
	missing := expecting(addProduct(1, "cart-2", "p1"), -1) // must exist: conflict
	anyVersion := addProduct(0, "cart-1", "p5")             // no expectation: accepted, v3
	c.sendAndWait(t, first, again, second, stale, missing, anyVersion)
	a.stop(t)
	// After a restart, state comes back from the events topic.
	c.start(t, "b")
	afterRestart := expecting(addProduct(0, "cart-1", "p6"), 3) // accepted, v4
	staleAfter := expecting(addProduct(0, "cart-1", "p7"), 3)   // conflict
	existing := expecting(addProduct(0, "cart-1", "p8"), -1)    // exists: accepted, v5
	c.sendAndWait(t, afterRestart, staleAfter, existing)
	c.verify(t)

	log := c.readEvents(t)
	outcomes := map[string]schemas.Outcome{}
	for _, d := range log.outcomes {
		outcomes[d.outcome.CommandID] = d.outcome
	}
	for _, want := range []struct {
		name    string
		cmd     command
		version int64 // of the event it wrote; 0: a conflict
		detail  string
	}{
		{"must not exist yet, new", first, 1, ""},
		{"must not exist yet, exists", again, 0, "the command expects cart-1 not to exist yet; it is at version 1"},
		{"the current version", second, 2, ""},
		{"a stale version", stale, 0, "the command expects cart-1 at version 1; it is at version 2"},
		{"must exist, missing", missing, 0, "the command expects cart-2 to exist; it does not (version 0)"},
		{"any version", anyVersion, 3, ""},
		{"the current version after a restart", afterRestart, 4, ""},
		{"a stale version after a restart", staleAfter, 0, "the command expects cart-1 at version 3; it is at version 4"},
		{"must exist, exists", existing, 5, ""},
	} {
		o := outcomes[want.cmd.env.ID]
		switch {
		case want.version == 0 && (o.Status != schemas.StatusRejected || o.Rejection == nil ||
			o.Rejection.Code != schemas.CodeVersionConflict || o.Rejection.Detail != want.detail || len(o.Events) != 0):
			t.Errorf("%s: %+v %+v, want a version conflict %q", want.name, o, o.Rejection, want.detail)
		case want.version > 0 && (o.Status != schemas.StatusAccepted || len(o.Events) != 1 || o.Events[0].AggregateVersion != want.version):
			t.Errorf("%s: %+v, want accepted at version %d", want.name, o, want.version)
		}
	}
}
