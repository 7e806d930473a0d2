package loadtest

import (
	"fmt"
	"math/rand"
	"strconv"
)

// generator makes the command sequence of a run: deterministic for a seed,
// with every aggregate id under the run's prefix so that the correctness
// check can tell this run's data from anything else in the stores.
//
// Carts and Articles size the live key space, as in a shop: a cart slot
// holds one open cart until a checkout is sent for it, then a new cart
// takes the slot; publishing puts a new article into its slot, and updates
// go to the slot's latest article. Without that, every cart would be
// checked out within seconds and the rest of a run would be refusals that
// write no events.
type generator struct {
	prefix   string
	rng      *rand.Rand
	carts    func() int
	articles func() int
	weights  []int
	n        int

	cartGeneration    []int
	articleGeneration []int
}

const (
	kindAdd = iota
	kindRemove
	kindCheckout
	kindPublish
	kindUpdate
	kindInvalid
)

func newGenerator(cfg Config, prefix string) *generator {
	rng := rand.New(rand.NewSource(int64(cfg.Seed)))
	pick := func(n int) func() int {
		if cfg.Zipf > 1 {
			z := rand.NewZipf(rng, cfg.Zipf, 1, uint64(n-1))
			return func() int { return int(z.Uint64()) }
		}
		return func() int { return rng.Intn(n) }
	}
	m := cfg.Mix
	return &generator{
		prefix: prefix, rng: rng, carts: pick(cfg.Carts), articles: pick(cfg.Articles),
		weights:        []int{m.AddProduct, m.RemoveProduct, m.Checkout, m.Publish, m.Update, m.Invalid},
		cartGeneration: make([]int, cfg.Carts), articleGeneration: make([]int, cfg.Articles),
	}
}

func (g *generator) kind() int {
	total := 0
	for _, w := range g.weights {
		total += w
	}
	r := g.rng.Intn(total)
	for k, w := range g.weights {
		if r < w {
			return k
		}
		r -= w
	}
	return kindAdd
}

// next returns one command as JSON and whether it is meant to be refused at
// the door.
func (g *generator) next() ([]byte, bool) {
	g.n++
	product := g.rng.Intn(50)
	cartSlot, articleSlot := g.carts(), g.articles()
	kind := g.kind()
	if kind == kindPublish {
		g.articleGeneration[articleSlot]++
	}
	cart := g.prefix + "cart-" + strconv.Itoa(cartSlot) + "-" + strconv.Itoa(g.cartGeneration[cartSlot])
	article := g.prefix + "article-" + strconv.Itoa(articleSlot) + "-" + strconv.Itoa(g.articleGeneration[articleSlot])
	switch kind {
	case kindRemove:
		return fmt.Appendf(nil, `{"type":"cart.remove_product","aggregate_id":%q,"data":{"product_id":"p%d","quantity":1}}`, cart, product), false
	case kindCheckout:
		g.cartGeneration[cartSlot]++
		return fmt.Appendf(nil, `{"type":"cart.checkout","aggregate_id":%q,"data":{"customer_id":"customer-%d"}}`, cart, g.rng.Intn(500)), false
	case kindPublish:
		return fmt.Appendf(nil, `{"type":"article.publish","aggregate_id":%q,"data":{"author_id":"author-%d","title":"title %d","body":"body","tags":["t%d"]}}`,
			article, g.rng.Intn(100), g.n, g.rng.Intn(10)), false
	case kindUpdate:
		return fmt.Appendf(nil, `{"type":"article.update","aggregate_id":%q,"data":{"title":"title %d"}}`, article, g.n), false
	case kindInvalid:
		return fmt.Appendf(nil, `{"type":"cart.add_product","aggregate_id":%q,"data":{"product_id":"p%d","quantity":0,"unit_price_cents":100}}`, cart, product), true
	}
	// Each product has one price, so re-adding never conflicts on price.
	return fmt.Appendf(nil, `{"type":"cart.add_product","aggregate_id":%q,"data":{"product_id":"p%d","quantity":%d,"unit_price_cents":%d}}`,
		cart, product, 1+g.rng.Intn(3), 100+product*25), false
}
