package aggregate_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

func ptr[T any](v T) *T { return &v }

// Commands as ValidateCommand produces them.
func publish(author string, tags ...string) schemas.PublishArticleV1 {
	return schemas.PublishArticleV1{AuthorID: author, Title: "Title", Body: "Body", Tags: tags}
}

func update(title string) schemas.UpdateArticleV1 { return schemas.UpdateArticleV1{Title: ptr(title)} }

func add(product string, qty, price int64) schemas.AddProductV1 {
	return schemas.AddProductV1{ProductID: product, Quantity: ptr(qty), UnitPriceCents: ptr(price)}
}

func remove(product string, qty int64) schemas.RemoveProductV1 {
	return schemas.RemoveProductV1{ProductID: product, Quantity: ptr(qty)}
}

func checkout(customer string) schemas.CheckoutV1 { return schemas.CheckoutV1{CustomerID: customer} }

// Events as Decide produces them.
func published(author string) schemas.ArticlePublishedV1 {
	return schemas.ArticlePublishedV1{AuthorID: author, Title: "Title", Body: "Body", Tags: []string{}}
}

func added(product string, qty, price int64) schemas.CartProductAddedV1 {
	return schemas.CartProductAddedV1{ProductID: product, Quantity: qty, UnitPriceCents: price}
}

func removed(product string, qty int64) schemas.CartProductRemovedV1 {
	return schemas.CartProductRemovedV1{ProductID: product, Quantity: qty}
}

func checkedOut(order string, lines ...schemas.OrderLine) schemas.CartCheckedOutV1 {
	var total int64
	for _, l := range lines {
		total += l.Quantity * l.UnitPriceCents
	}
	return schemas.CartCheckedOutV1{CustomerID: "c1", OrderID: order, TotalCents: total, Lines: lines}
}

// replay rebuilds a state from events.
func replay(events ...any) *aggregate.State {
	s := &aggregate.State{}
	for _, e := range events {
		aggregate.Apply(s, e)
	}
	return s
}

// run decides and applies commands in order, failing on any rejection, and
// returns the state.
func run(t testing.TB, id string, cmds ...any) *aggregate.State {
	t.Helper()
	s := &aggregate.State{}
	for i, c := range cmds {
		events, rej := aggregate.Decide(s, id, c)
		if rej != nil {
			t.Fatalf("setup command %d (%T) rejected: %+v", i, c, rej)
		}
		for _, e := range events {
			aggregate.Apply(s, e)
		}
	}
	return s
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		history  []any // commands decided and applied first
		cmd      any
		want     []any  // events, when accepted
		wantCode string // rejection code, when rejected
	}{
		// Articles.
		{name: "publish a new article", id: "article-1", cmd: publish("u1", "go"),
			want: []any{schemas.ArticlePublishedV1{AuthorID: "u1", Title: "Title", Body: "Body", Tags: []string{"go"}}}},
		{name: "publish without tags records an empty list", id: "article-1", cmd: publish("u1"),
			want: []any{published("u1")}},
		{name: "publish twice", id: "article-1", history: []any{publish("u1")}, cmd: publish("u2"),
			wantCode: aggregate.CodeArticleExists},
		{name: "publish twice after an update", id: "article-1", history: []any{publish("u1"), update("T2")}, cmd: publish("u1"),
			wantCode: aggregate.CodeArticleExists},
		{name: "publish on a cart", id: "x", history: []any{add("p1", 1, 10)}, cmd: publish("u1"),
			wantCode: aggregate.CodeWrongAggregate},
		{name: "update an unknown article", id: "article-1", cmd: update("T2"),
			wantCode: aggregate.CodeArticleNotFound},
		{name: "update a published article", id: "article-1", history: []any{publish("u1")},
			cmd:  schemas.UpdateArticleV1{Body: ptr("B2"), Tags: ptr([]string{})},
			want: []any{schemas.ArticleUpdatedV1{Body: ptr("B2"), Tags: ptr([]string{})}}},
		{name: "update twice", id: "article-1", history: []any{publish("u1"), update("T2")}, cmd: update("T3"),
			want: []any{schemas.ArticleUpdatedV1{Title: ptr("T3")}}},

		// Adding to a cart.
		{name: "add to a new cart", id: "cart-1", cmd: add("p1", 2, 150),
			want: []any{added("p1", 2, 150)}},
		{name: "add a free product", id: "cart-1", cmd: add("p1", 1, 0),
			want: []any{added("p1", 1, 0)}},
		{name: "add more of a product at its price", id: "cart-1", history: []any{add("p1", 2, 150)}, cmd: add("p1", 3, 150),
			want: []any{added("p1", 3, 150)}},
		{name: "add a product at another price", id: "cart-1", history: []any{add("p1", 2, 150)}, cmd: add("p1", 1, 149),
			wantCode: aggregate.CodePriceMismatch},
		{name: "re-add a removed product at another price", id: "cart-1", history: []any{add("p1", 2, 150), remove("p1", 2)}, cmd: add("p1", 1, 99),
			want: []any{added("p1", 1, 99)}},
		{name: "add up to the maximum quantity", id: "cart-1", history: []any{add("p1", schemas.MaxQuantity-1, 1)}, cmd: add("p1", 1, 1),
			want: []any{added("p1", 1, 1)}},
		{name: "add beyond the maximum quantity", id: "cart-1", history: []any{add("p1", schemas.MaxQuantity, 1)}, cmd: add("p1", 1, 1),
			wantCode: aggregate.CodeQuantityTooLarge},
		{name: "price is checked before quantity", id: "cart-1", history: []any{add("p1", schemas.MaxQuantity, 1)}, cmd: add("p1", 1, 2),
			wantCode: aggregate.CodePriceMismatch},
		{name: "add to an article", id: "x", history: []any{publish("u1")}, cmd: add("p1", 1, 1),
			wantCode: aggregate.CodeWrongAggregate},
		{name: "add after checkout", id: "cart-1", history: []any{add("p1", 1, 1), checkout("c1")}, cmd: add("p2", 1, 1),
			wantCode: aggregate.CodeCartCheckedOut},

		// Removing from a cart.
		{name: "remove from a new cart", id: "cart-1", cmd: remove("p1", 1),
			wantCode: aggregate.CodeNotInCart},
		{name: "remove a product not in the cart", id: "cart-1", history: []any{add("p1", 1, 1)}, cmd: remove("p2", 1),
			wantCode: aggregate.CodeNotInCart},
		{name: "remove part of a line", id: "cart-1", history: []any{add("p1", 5, 1)}, cmd: remove("p1", 2),
			want: []any{removed("p1", 2)}},
		{name: "remove a whole line", id: "cart-1", history: []any{add("p1", 2, 1), add("p1", 3, 1)}, cmd: remove("p1", 5),
			want: []any{removed("p1", 5)}},
		{name: "remove more than held", id: "cart-1", history: []any{add("p1", 2, 1)}, cmd: remove("p1", 3),
			wantCode: aggregate.CodeRemoveTooMany},
		{name: "remove more than held after a partial remove", id: "cart-1", history: []any{add("p1", 5, 1), remove("p1", 3)}, cmd: remove("p1", 3),
			wantCode: aggregate.CodeRemoveTooMany},
		{name: "remove a product already removed", id: "cart-1", history: []any{add("p1", 2, 1), remove("p1", 2)}, cmd: remove("p1", 1),
			wantCode: aggregate.CodeNotInCart},
		{name: "remove after checkout", id: "cart-1", history: []any{add("p1", 2, 1), checkout("c1")}, cmd: remove("p1", 1),
			wantCode: aggregate.CodeCartCheckedOut},
		{name: "remove from an article", id: "x", history: []any{publish("u1")}, cmd: remove("p1", 1),
			wantCode: aggregate.CodeWrongAggregate},

		// Checkout.
		{name: "checkout a new cart", id: "cart-1", cmd: checkout("c1"),
			wantCode: aggregate.CodeCartEmpty},
		{name: "checkout a cart emptied by removes", id: "cart-1", history: []any{add("p1", 2, 1), add("p2", 1, 1), remove("p1", 2), remove("p2", 1)}, cmd: checkout("c1"),
			wantCode: aggregate.CodeCartEmpty},
		{name: "checkout twice", id: "cart-1", history: []any{add("p1", 1, 1), checkout("c1")}, cmd: checkout("c1"),
			wantCode: aggregate.CodeCartCheckedOut},
		{name: "checkout an article", id: "x", history: []any{publish("u1")}, cmd: checkout("c1"),
			wantCode: aggregate.CodeWrongAggregate},
		{name: "checkout one line", id: "cart-9", history: []any{add("p1", 3, 250)}, cmd: checkout("c1"),
			want: []any{schemas.CartCheckedOutV1{CustomerID: "c1", OrderID: "cart-9", TotalCents: 750,
				Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 3, UnitPriceCents: 250}}}}},
		{name: "checkout lists lines in first-added order", id: "cart-7",
			history: []any{
				add("p2", 1, 1000), add("p1", 2, 300), add("p3", 4, 25),
				add("p2", 1, 1000), // more of p2 keeps its place
				remove("p1", 2),    // p1 leaves the cart
				add("p1", 1, 310),  // and comes back last, at a new price
				remove("p3", 1),
				add("p0", 5, 0),
			},
			cmd: checkout("c42"),
			want: []any{schemas.CartCheckedOutV1{CustomerID: "c42", OrderID: "cart-7", TotalCents: 2*1000 + 3*25 + 1*310 + 5*0,
				Lines: []schemas.OrderLine{
					{ProductID: "p2", Quantity: 2, UnitPriceCents: 1000},
					{ProductID: "p3", Quantity: 3, UnitPriceCents: 25},
					{ProductID: "p1", Quantity: 1, UnitPriceCents: 310},
					{ProductID: "p0", Quantity: 5, UnitPriceCents: 0},
				}}}},

		// Not a command.
		{name: "unknown command", id: "cart-1", cmd: "cart.explode", wantCode: aggregate.CodeUndecodableCommand},
		{name: "event passed as a command", id: "cart-1", cmd: added("p1", 1, 1), wantCode: aggregate.CodeUndecodableCommand},
		{name: "nil command", id: "cart-1", cmd: nil, wantCode: aggregate.CodeUndecodableCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, tt.id, tt.history...)
			before := run(t, tt.id, tt.history...)
			events, rej := aggregate.Decide(s, tt.id, tt.cmd)
			if !reflect.DeepEqual(s, before) {
				t.Errorf("Decide changed the state from %+v to %+v", before, s)
			}
			if tt.wantCode != "" {
				if rej == nil {
					t.Fatalf("Decide accepted with %#v, want rejection %s", events, tt.wantCode)
				}
				if rej.Code != tt.wantCode {
					t.Errorf("rejection code = %q (%s), want %q", rej.Code, rej.Detail, tt.wantCode)
				}
				if rej.Detail == "" {
					t.Error("rejection has no detail")
				}
				if events != nil {
					t.Errorf("Decide returned events %#v with a rejection", events)
				}
				return
			}
			if rej != nil {
				t.Fatalf("Decide rejected: %+v", rej)
			}
			if !reflect.DeepEqual(events, tt.want) {
				t.Errorf("events = %#v\nwant     %#v", events, tt.want)
			}
		})
	}
}

func TestRejectionDetails(t *testing.T) {
	tests := []struct {
		name    string
		history []any
		cmd     any
		want    string
	}{
		{"price mismatch", []any{add("p1", 2, 150)}, add("p1", 1, 149), "product p1 is in the cart at 150 cents, not 149"},
		{"remove too many", []any{add("p1", 2, 1)}, remove("p1", 3), "cannot remove 3 of product p1; the cart holds 2"},
		{"not in cart", nil, remove("p9", 1), "product p9 is not in the cart"},
		{"wrong kind", []any{publish("u1")}, add("p1", 1, 1), "aggregate id names an article, not a cart"},
		{"publish on a cart", []any{add("p1", 1, 1)}, publish("u1"), "aggregate id names a cart, not an article"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rej := aggregate.Decide(run(t, "x", tt.history...), "x", tt.cmd)
			if rej == nil || rej.Detail != tt.want {
				t.Errorf("rejection = %+v, want detail %q", rej, tt.want)
			}
		})
	}
}

// An article.update sent to a cart's id names the wrong kind of aggregate,
// as article.publish to a cart's id does.
func TestDecideUpdateOnCartIsWrongKind(t *testing.T) {
	s := run(t, "x", add("p1", 1, 1))
	_, rej := aggregate.Decide(s, "x", update("T"))
	if rej == nil || rej.Code != aggregate.CodeWrongAggregate {
		t.Errorf("rejection = %+v, want code %s", rej, aggregate.CodeWrongAggregate)
	}
}

// A full cart of the largest lines still has a positive total: the line
// limit keeps MaxCartLines × MaxQuantity × MaxUnitPriceCents below 2^63.
func TestFullCartTotalFitsAndExtraLineIsRejected(t *testing.T) {
	cmds := make([]any, 0, aggregate.MaxCartLines)
	for i := range aggregate.MaxCartLines {
		cmds = append(cmds, add(fmt.Sprintf("p%d", i), schemas.MaxQuantity, schemas.MaxUnitPriceCents))
	}
	s := run(t, "cart-big", cmds...)
	if _, rej := aggregate.Decide(s, "cart-big", add("one-more", 1, 1)); rej == nil || rej.Code != aggregate.CodeCartFull {
		t.Fatalf("line %d: rejection = %+v, want %s", aggregate.MaxCartLines+1, rej, aggregate.CodeCartFull)
	}
	events, rej := aggregate.Decide(s, "cart-big", checkout("c1"))
	if rej != nil {
		t.Fatalf("checkout of a full cart rejected: %+v", rej)
	}
	want := int64(aggregate.MaxCartLines) * schemas.MaxQuantity * schemas.MaxUnitPriceCents
	if total := events[0].(schemas.CartCheckedOutV1).TotalCents; total != want {
		t.Errorf("total_cents = %d, want %d", total, want)
	}
}

func TestApplyIncrementsVersion(t *testing.T) {
	events := []any{
		added("p1", 2, 10), added("p2", 1, 5), removed("p1", 1), removed("p1", 1), checkedOut("c"),
	}
	s := &aggregate.State{}
	for i, e := range events {
		aggregate.Apply(s, e)
		if s.Version != int64(i+1) {
			t.Fatalf("after event %d (%T) Version = %d, want %d", i, e, s.Version, i+1)
		}
	}
	a := replay(published("u1"), schemas.ArticleUpdatedV1{Title: ptr("x")}, schemas.ArticleUpdatedV1{Body: ptr("y")})
	if a.Version != 3 {
		t.Errorf("article Version = %d, want 3", a.Version)
	}
	// An event type this build does not know still counts: versions are
	// positions in the aggregate's stream.
	u := replay(added("p1", 1, 1), struct{ Future bool }{true})
	if u.Version != 2 {
		t.Errorf("Version after an unknown event = %d, want 2", u.Version)
	}
}

func TestApplyBuildsState(t *testing.T) {
	tests := []struct {
		name   string
		events []any
		want   *aggregate.State
	}{
		{"nothing", nil, &aggregate.State{}},
		{"published", []any{published("u1")}, &aggregate.State{Version: 1, Article: &aggregate.Article{AuthorID: "u1"}}},
		{"published and updated", []any{published("u1"), schemas.ArticleUpdatedV1{Title: ptr("T")}},
			&aggregate.State{Version: 2, Article: &aggregate.Article{AuthorID: "u1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := replay(tt.events...); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("state = %+v, want %+v", got, tt.want)
			}
		})
	}

	c := replay(added("p1", 2, 10), added("p2", 1, 5), added("p1", 3, 10), removed("p2", 1), removed("p1", 1))
	if c.Version != 5 || c.Article != nil || c.Cart == nil || c.Cart.CheckedOut {
		t.Fatalf("cart state = %+v, want version 5, open cart, no article", c)
	}
	if want := map[string]aggregate.Line{"p1": {Quantity: 4, UnitPriceCents: 10}}; !reflect.DeepEqual(c.Cart.Lines, want) {
		t.Errorf("cart lines = %v, want %v", c.Cart.Lines, want)
	}
	aggregate.Apply(c, checkedOut("cart-1"))
	if !c.Cart.CheckedOut || c.Version != 6 {
		t.Errorf("after checkout: CheckedOut = %v, Version = %d; want true, 6", c.Cart.CheckedOut, c.Version)
	}
}

// decidesEach returns what a state decides for each of the commands, one
// after the other, without applying their events.
func decidesEach(commands ...any) func(*aggregate.State) []string {
	return func(s *aggregate.State) []string {
		var got []string
		for _, cmd := range commands {
			events, rej := aggregate.Decide(s, "cart-1", cmd)
			got = append(got, fmt.Sprintf("%v %+v", events, rej))
		}
		return got
	}
}

// A retired state decides every command as the full state does, and
// retiring leaves open carts and articles alone.
func TestRetireKeepsEveryDecision(t *testing.T) {
	decideAll := decidesEach(publish("u1"), update("T"), add("p1", 1, 10), add("p9", 1, 99), remove("p1", 1), checkout("c2"))
	full := run(t, "cart-1", add("p1", 2, 10), add("p2", 1, 5), checkout("c1"))
	retired := run(t, "cart-1", add("p1", 2, 10), add("p2", 1, 5), checkout("c1"))
	aggregate.Retire(retired)
	if len(retired.Cart.Lines) != 0 || retired.Version != full.Version {
		t.Errorf("retired cart keeps %d lines at version %d; want none at %d", len(retired.Cart.Lines), retired.Version, full.Version)
	}
	if got, want := decideAll(retired), decideAll(full); !reflect.DeepEqual(got, want) {
		t.Errorf("retired cart decides\n%v\nwant\n%v", got, want)
	}
	// A foreign event after the checkout still applies without a panic.
	aggregate.Apply(retired, added("p3", 1, 1))

	openCart := run(t, "cart-2", add("p1", 2, 10))
	before := fmt.Sprintf("%+v %+v", openCart.Cart, openCart.Version)
	aggregate.Retire(openCart)
	if after := fmt.Sprintf("%+v %+v", openCart.Cart, openCart.Version); after != before {
		t.Errorf("Retire changed an open cart: %s -> %s", before, after)
	}

	fullArticle, retiredArticle := replay(published("u1")), replay(published("u1"))
	aggregate.Retire(retiredArticle)
	if got, want := decideAll(retiredArticle), decideAll(fullArticle); !reflect.DeepEqual(got, want) {
		t.Errorf("retired article decides\n%v\nwant\n%v", got, want)
	}
	// Retired articles share one value; applying to one leaves the others.
	other := replay(published("u2"))
	aggregate.Retire(other)
	aggregate.Apply(retiredArticle, published("u3"))
	if other.Article.AuthorID != "" || retiredArticle.Article.AuthorID != "u3" {
		t.Errorf("applying to a retired article changed another: %+v, %+v", other.Article, retiredArticle.Article)
	}
}

// A full command stream, as the processor runs it: decide, then apply the
// events; the version counts every event.
func TestCommandStream(t *testing.T) {
	s := &aggregate.State{}
	steps := []struct {
		cmd      any
		wantCode string
	}{
		{add("p1", 2, 100), ""},
		{add("p1", 1, 90), aggregate.CodePriceMismatch},
		{remove("p2", 1), aggregate.CodeNotInCart},
		{add("p2", 1, 50), ""},
		{remove("p1", 3), aggregate.CodeRemoveTooMany},
		{remove("p1", 1), ""},
		{checkout("c1"), ""},
		{add("p3", 1, 1), aggregate.CodeCartCheckedOut},
		{checkout("c1"), aggregate.CodeCartCheckedOut},
		{publish("u1"), aggregate.CodeWrongAggregate},
	}
	var applied int64
	var last []any
	for i, st := range steps {
		events, rej := aggregate.Decide(s, "cart-1", st.cmd)
		switch {
		case st.wantCode == "" && rej != nil:
			t.Fatalf("step %d (%T): rejected %+v", i, st.cmd, rej)
		case st.wantCode != "" && (rej == nil || rej.Code != st.wantCode):
			t.Fatalf("step %d (%T): rejection %+v, events %#v; want code %s", i, st.cmd, rej, events, st.wantCode)
		}
		for _, e := range events {
			aggregate.Apply(s, e)
			applied++
		}
		if len(events) > 0 {
			last = events
		}
	}
	if s.Version != applied || applied != 4 {
		t.Errorf("Version = %d after %d events, want 4", s.Version, applied)
	}
	want := checkedOut("cart-1",
		schemas.OrderLine{ProductID: "p1", Quantity: 1, UnitPriceCents: 100},
		schemas.OrderLine{ProductID: "p2", Quantity: 1, UnitPriceCents: 50})
	if !reflect.DeepEqual(last, []any{want}) {
		t.Errorf("checkout events = %#v, want %#v", last, want)
	}
}
