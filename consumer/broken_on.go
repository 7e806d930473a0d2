//go:build kappa_broken

package consumer

const brokenForFaultTests = true
