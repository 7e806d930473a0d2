// Package hostcpu reads the CPU time of the servers Kappa uses (ClickHouse,
// Postgres, Kafka) when they run on this machine, from /proc. The bench and
// the load test report it next to Kappa's own processes; elsewhere than
// Linux, or with the servers on other machines, it reads nothing.
package hostcpu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Server names as Servers returns them.
const (
	ClickHouse = "clickhouse"
	Postgres   = "postgres"
	Kafka      = "kafka"
)

// Servers returns the CPU seconds used so far by every ClickHouse,
// Postgres and Kafka process running now, by server. A Postgres backend
// that has exited is counted by the postmaster that reaped it (cutime), so
// the difference of two readings covers backends that came and went.
func Servers() map[string]float64 {
	const ticks = 100.0 // USER_HZ on Linux
	total := map[string]float64{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		server := serverOf(e.Name(), string(stat))
		if server == "" {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) < 15 {
			continue
		}
		// utime, stime, cutime, cstime
		for _, f := range fields[11:15] {
			t, _ := strconv.ParseFloat(f, 64)
			total[server] += t / ticks
		}
	}
	return total
}

// serverOf names the server a process belongs to, or "".
func serverOf(pid, stat string) string {
	open, closing := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if open < 0 || closing < open || closing+2 > len(stat) {
		return ""
	}
	switch name := stat[open+1 : closing]; {
	case strings.HasPrefix(name, "clickhouse"):
		return ClickHouse
	case name == "postgres":
		return Postgres
	case name == "java":
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline")) //nolint:gosec // G304: pid comes from listing /proc
		if strings.Contains(string(cmdline), "kafka.Kafka") {
			return Kafka
		}
	}
	return ""
}
