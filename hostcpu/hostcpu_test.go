package hostcpu

import (
	"os"
	"strconv"
	"testing"
)

func TestServerOfNamesTheServers(t *testing.T) {
	for stat, want := range map[string]string{
		"10 (clickhouse-serv) S 1 2 3":      ClickHouse,
		"11 (postgres) S 1 2 3":             Postgres,
		"12 (kappa) S 1 2 3":                "",
		"13 (weird (name)) S 1 2 3":         "",
		"14 (postgres":                      "",
		"15 (java) S 1 2 3":                 "", // no such pid: not Kafka
		"16 (clickhouse-odbc-bridge) R 1 2": ClickHouse,
	} {
		if got := serverOf("999999999", stat); got != want {
			t.Errorf("serverOf(%q) = %q, want %q", stat, got, want)
		}
	}
}

// This process is none of the servers.
func TestTheTestProcessIsNoServer(t *testing.T) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(os.Getpid()) + "/stat")
	if err != nil {
		t.Skip("no /proc here")
	}
	if got := serverOf(strconv.Itoa(os.Getpid()), string(stat)); got != "" {
		t.Errorf("the test process counts as server %q", got)
	}
}
