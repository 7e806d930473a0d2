package processor

// WithBootstrapChunk makes bootstraps write at most n records per
// transaction.
func WithBootstrapChunk(n int) func(*Config) {
	return func(c *Config) { c.bootstrapChunk = n }
}
