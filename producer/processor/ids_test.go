package processor

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Event and outcome ids are what every earlier build wrote: a command
// decided again after an abort, by this build or an older one, must name
// its events and outcome exactly as before.
func TestIDsAreUUIDVersion5OfTheCommand(t *testing.T) {
	for _, commandID := range []string{"", "c", uuid.NewString(), strings.Repeat("long-id-", 40)} {
		for _, i := range []int{0, 1, 9, 10, 12345} {
			want := uuid.NewSHA1(eventIDSpace, []byte(commandID+"/"+strconv.Itoa(i))).String()
			if got := eventID(commandID, i); got != want {
				t.Errorf("eventID(%q, %d) = %s, want %s", commandID, i, got, want)
			}
		}
		for _, at := range []schemas.Position{{}, {Partition: 3, Offset: 7}, {Partition: 511, Offset: 1 << 40}} {
			want := uuid.NewSHA1(eventIDSpace, []byte(commandID+"/outcome/"+at.String())).String()
			if got := outcomeID(commandID, at); got != want {
				t.Errorf("outcomeID(%q, %v) = %s, want %s", commandID, at, got, want)
			}
		}
	}
}

func BenchmarkEventID(b *testing.B) {
	commandID := uuid.NewString()
	b.ReportAllocs()
	for i := range b.N {
		_ = eventID(commandID, i%3)
	}
}
