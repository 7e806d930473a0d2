package processor

// WithBootstrapChunk makes bootstraps write at most n records per
// transaction.
func WithBootstrapChunk(n int) func(*Config) {
	return func(c *Config) { c.bootstrapChunk = n }
}

// Small filters of aggregates make every test's processors rebuild them
// as their partitions grow, while they decide.
func init() { minPresenceCapacity = 64 }
