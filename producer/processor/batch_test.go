package processor

import (
	"testing"
	"time"
)

func TestTheBatchDelayGrowsWithTheLastTransaction(t *testing.T) {
	c := Config{TransactionInterval: 100 * time.Millisecond}
	for _, tt := range []struct {
		lastSize int
		want     time.Duration
	}{
		{0, 0},                      // nothing decided yet: start at once
		{1, time.Millisecond},       // a lone command: almost at once
		{40, 40 * time.Millisecond}, // moderate load
		{100, 100 * time.Millisecond},
		{5000, 100 * time.Millisecond}, // full load: the interval
	} {
		if got := c.batchDelay(tt.lastSize); got != tt.want {
			t.Errorf("after a transaction of %d: %v, want %v", tt.lastSize, got, tt.want)
		}
	}
	never := Config{TransactionInterval: -1}
	if got := never.batchDelay(5000); got != 0 {
		t.Errorf("a negative interval waits %v", got)
	}
}
