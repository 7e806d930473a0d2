//go:build !kappa_broken

package projector

// brokenForFaultTests is true only in the fault suite's negative-control
// build (tag kappa_broken), which must lose or duplicate rows.
const brokenForFaultTests = false
