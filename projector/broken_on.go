//go:build kappa_broken

package projector

const brokenForFaultTests = true
