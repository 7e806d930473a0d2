package processor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/schemas"
)

func checkout(partition int32, cart string) command {
	data, err := json.Marshal(schemas.CheckoutV1{CustomerID: "u1"})
	if err != nil {
		panic(err)
	}
	return command{partition: partition, env: schemas.Envelope{
		ID: uuid.NewString(), Type: schemas.CheckoutCart, Source: "kappa/test", Time: time.Now().UTC(),
		SchemaVersion: 1, AggregateID: cart, Tenant: "tenant", Data: data,
	}}
}

// TestTheHeldStateIsAccounted: the processor reports the aggregates it
// holds, one per aggregate however many commands it took, and an estimate
// of their bytes that shrinks when a checkout retires a cart's lines; a
// restarted processor reports the same aggregates, restored from the
// records it read. Refused commands to unknown aggregates hold nothing.
func TestTheHeldStateIsAccounted(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(t, "a")
	var cmds []command
	for i := range 30 {
		part := int32(i % 2)
		cmds = append(cmds, adds(part, fmt.Sprintf("cart-%d", i), 3)...)
	}
	cmds = append(cmds, checkout(0, "never-filled")) // refused: the cart is empty
	c.sendAndWait(t, cmds...)
	held, _ := a.obs.state()
	if held.aggregates != 30 || held.bytes <= 0 {
		t.Fatalf("held %+v after 30 carts of 3 lines, want 30 aggregates and some bytes", held)
	}
	before := held.bytes
	var checkouts []command
	for i := range 30 {
		checkouts = append(checkouts, checkout(int32(i%2), fmt.Sprintf("cart-%d", i)))
	}
	c.sendAndWait(t, checkouts...)
	held, _ = a.obs.state()
	if held.aggregates != 30 || held.bytes >= before {
		t.Errorf("held %+v after checking every cart out, want 30 aggregates and fewer bytes than %d", held, before)
	}
	a.stop(t)

	b := c.start(t, "b")
	c.sendAndWait(t, addProduct(0, "cart-new", "p1"), addProduct(1, "cart-new-1", "p1"))
	kappatest.Eventually(t, waitFor, 10*time.Millisecond, func() error {
		held, restored := b.obs.state()
		if held.aggregates != 32 || restored != 30*4 {
			return fmt.Errorf("after a restart: held %+v, %d records restored; want 32 aggregates and the 120 events restored", held, restored)
		}
		return nil
	})
}
