//go:build kappa_broken

package clickhouse

const brokenForFaultTests = true
