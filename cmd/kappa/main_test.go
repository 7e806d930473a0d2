package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadtestFlagsRefuseZeroes(t *testing.T) {
	valid := loadtestCmd{Rate: 1000, Duration: time.Second, Connections: 1, BatchSize: 1, Mix: "add=1", Carts: 1, Articles: 1, Seed: 1, FreshnessEvery: 1}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate() of valid flags = %v", err)
	}
	zero := loadtestCmd{Duration: time.Second, Mix: "add=0", Seed: 0}
	err := zero.Validate()
	for _, want := range []string{"--connections", "--batch-size", "--carts", "--articles", "--freshness-every", "--rate", "--seed", "every weight is 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
	ramp := zero
	ramp.Ramp = "100:1s"
	if err := ramp.Validate(); err != nil && strings.Contains(err.Error(), "--rate") {
		t.Errorf("Validate() with --ramp complains about --rate: %v", err)
	}
}
