//go:build !kappa_broken

package clickhouse

// brokenForFaultTests is true only in the fault suite's negative-control
// build (tag kappa_broken), whose projection inserts redelivered rows again.
const brokenForFaultTests = false
