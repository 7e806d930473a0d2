package aggregate_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
)

// A state read back from its binary form decides every command as the
// original does, at the same version; a cart keeps its lines' order.
func TestStateSurvivesItsEncoding(t *testing.T) {
	decideAll := decidesEach(publish("u1"), update("T"), add("p1", 1, 10), add("p9", 1, 99), remove("p1", 1), remove("p2", 1), checkout("c2"))
	states := map[string]*aggregate.State{
		"none":        {},
		"article":     replay(published("u1")),
		"open cart":   run(t, "cart-1", add("p2", 2, 10), add("p1", 1, 5), add("p3", 4, 7), remove("p1", 1)),
		"checked out": run(t, "cart-2", add("p1", 2, 10), checkout("c1")),
	}
	for name, s := range states {
		t.Run(name, func(t *testing.T) {
			aggregate.Retire(s)
			got, err := aggregate.UnmarshalState(aggregate.MarshalState(nil, *s))
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != s.Version {
				t.Errorf("version %d, want %d", got.Version, s.Version)
			}
			if g, w := decideAll(&got), decideAll(s); !reflect.DeepEqual(g, w) {
				t.Errorf("decoded state decides\n%v\nwant\n%v", g, w)
			}
		})
	}
}

// Bytes that are not a state are refused with the reason, never read as
// an empty aggregate.
func TestBrokenStateIsRefused(t *testing.T) {
	whole := aggregate.MarshalState(nil, *run(t, "cart-1", add("p1", 2, 10), add("p2", 1, 5)))
	tests := map[string]struct {
		b    []byte
		want string
	}{
		"empty":          {nil, "truncated"},
		"unknown format": {append([]byte{9}, whole[1:]...), "format 9"},
		"truncated":      {whole[:len(whole)-1], "truncated"},
		"trailing bytes": {append(whole, 0), "after its end"},
		"unknown kind":   {[]byte{1, 3, 7}, "unknown kind 7"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := aggregate.UnmarshalState(tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func FuzzUnmarshalState(f *testing.F) {
	f.Add(aggregate.MarshalState(nil, *run(f, "cart-1", add("p1", 2, 10), add("p2", 1, 5))))
	f.Add(aggregate.MarshalState(nil, *replay(published("u1"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := aggregate.UnmarshalState(b)
		if err != nil {
			return
		}
		again, err := aggregate.UnmarshalState(aggregate.MarshalState(nil, s))
		if err != nil || again.Version != s.Version {
			t.Fatalf("a decoded state does not survive its encoding: %v, version %d vs %d", err, again.Version, s.Version)
		}
	})
}
