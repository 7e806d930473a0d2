// Package aggregate holds the write-side state of articles and carts and the
// business rules that decide which events a command produces. It is pure:
// no Kafka, no clocks, no I/O, so every rule is a table-driven test.
package aggregate

import (
	"fmt"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Rejection codes. Each names the rule a command broke.
const (
	CodeArticleExists      = "article_already_published"
	CodeArticleNotFound    = "article_not_found"
	CodeCartCheckedOut     = "cart_checked_out"
	CodeCartEmpty          = "cart_empty"
	CodeNotInCart          = "product_not_in_cart"
	CodeRemoveTooMany      = "remove_exceeds_quantity"
	CodePriceMismatch      = "unit_price_mismatch"
	CodeQuantityTooLarge   = "quantity_too_large"
	CodeCartFull           = "cart_full"
	CodeWrongAggregate     = "wrong_aggregate_kind"
	CodeUndecodableCommand = schemas.CodeUndecodableCommand
)

// MaxCartLines bounds a cart so that its total always fits in int64:
// MaxCartLines × MaxQuantity × MaxUnitPriceCents < 2^63.
const MaxCartLines = 1000

// State is one aggregate as rebuilt from its events. Version counts the
// aggregate's events; zero means the aggregate does not exist yet.
type State struct {
	Version int64
	Article *Article
	Cart    *Cart
}

// Article is the write-side state of an article.
type Article struct {
	AuthorID string
}

// Cart is the write-side state of a cart.
type Cart struct {
	CheckedOut bool
	Lines      map[string]Line
	order      []string // product ids in first-added order, for stable order lines
}

// Line is one product in a cart.
type Line struct {
	Quantity       int64
	UnitPriceCents int64
}

// Decide returns the events a command produces against the current state,
// or the rejection that refuses it. It does not change the state.
func Decide(s *State, aggregateID string, cmd any) ([]any, *schemas.Rejection) {
	switch c := cmd.(type) {
	case schemas.PublishArticleV1:
		if s.Cart != nil {
			return nil, wrongKind("an article", "a cart")
		}
		if s.Article != nil {
			return nil, reject(CodeArticleExists, "article is already published")
		}
		return []any{schemas.ArticlePublishedV1{AuthorID: c.AuthorID, Title: c.Title, Body: c.Body, Tags: nonNil(c.Tags)}}, nil
	case schemas.UpdateArticleV1:
		if s.Cart != nil {
			return nil, wrongKind("an article", "a cart")
		}
		if s.Article == nil {
			return nil, reject(CodeArticleNotFound, "article does not exist; publish it first")
		}
		return []any{schemas.ArticleUpdatedV1(c)}, nil
	case schemas.AddProductV1:
		if r := cartOpen(s); r != nil {
			return nil, r
		}
		if s.Cart != nil {
			if l, ok := s.Cart.Lines[c.ProductID]; ok {
				if l.UnitPriceCents != *c.UnitPriceCents {
					return nil, reject(CodePriceMismatch, fmt.Sprintf("product %s is in the cart at %d cents, not %d", c.ProductID, l.UnitPriceCents, *c.UnitPriceCents))
				}
				if l.Quantity+*c.Quantity > schemas.MaxQuantity {
					return nil, reject(CodeQuantityTooLarge, fmt.Sprintf("product %s would exceed %d units", c.ProductID, schemas.MaxQuantity))
				}
			} else if len(s.Cart.Lines) >= MaxCartLines {
				return nil, reject(CodeCartFull, fmt.Sprintf("a cart holds at most %d products", MaxCartLines))
			}
		}
		return []any{schemas.CartProductAddedV1{ProductID: c.ProductID, Quantity: *c.Quantity, UnitPriceCents: *c.UnitPriceCents}}, nil
	case schemas.RemoveProductV1:
		if r := cartOpen(s); r != nil {
			return nil, r
		}
		var held int64
		if s.Cart != nil {
			held = s.Cart.Lines[c.ProductID].Quantity
		}
		if held == 0 {
			return nil, reject(CodeNotInCart, fmt.Sprintf("product %s is not in the cart", c.ProductID))
		}
		if *c.Quantity > held {
			return nil, reject(CodeRemoveTooMany, fmt.Sprintf("cannot remove %d of product %s; the cart holds %d", *c.Quantity, c.ProductID, held))
		}
		return []any{schemas.CartProductRemovedV1{ProductID: c.ProductID, Quantity: *c.Quantity}}, nil
	case schemas.CheckoutV1:
		if r := cartOpen(s); r != nil {
			return nil, r
		}
		if s.Cart == nil || len(s.Cart.Lines) == 0 {
			return nil, reject(CodeCartEmpty, "cannot check out an empty cart")
		}
		lines := make([]schemas.OrderLine, 0, len(s.Cart.Lines))
		var total int64
		for _, id := range s.Cart.order {
			l, ok := s.Cart.Lines[id]
			if !ok {
				continue
			}
			lines = append(lines, schemas.OrderLine{ProductID: id, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents})
			total += l.Quantity * l.UnitPriceCents
		}
		return []any{schemas.CartCheckedOutV1{CustomerID: c.CustomerID, OrderID: aggregateID, TotalCents: total, Lines: lines}}, nil
	}
	return nil, reject(CodeUndecodableCommand, fmt.Sprintf("no rule for command %T", cmd))
}

// Apply folds one event into the state and bumps its version. Apply never
// refuses: events are facts.
func Apply(s *State, event any) {
	s.Version++
	switch e := event.(type) {
	case schemas.ArticlePublishedV1:
		s.Article = &Article{AuthorID: e.AuthorID}
	case schemas.ArticleUpdatedV1:
		if s.Article == nil {
			s.Article = &Article{}
		}
	case schemas.CartProductAddedV1:
		c := s.cart()
		l, ok := c.Lines[e.ProductID]
		if !ok {
			c.order = append(c.order, e.ProductID)
		}
		c.Lines[e.ProductID] = Line{Quantity: l.Quantity + e.Quantity, UnitPriceCents: e.UnitPriceCents}
	case schemas.CartProductRemovedV1:
		c := s.cart()
		l := c.Lines[e.ProductID]
		l.Quantity -= e.Quantity
		if l.Quantity <= 0 {
			delete(c.Lines, e.ProductID)
			c.order = without(c.order, e.ProductID)
		} else {
			c.Lines[e.ProductID] = l
		}
	case schemas.CartCheckedOutV1:
		s.cart().CheckedOut = true
	}
}

// Retire drops what a state no longer needs for deciding: a checked-out
// cart refuses every command, so its lines go, and an article is only
// published or not. A processor keeps every aggregate it owns in memory,
// and most carts end checked out.
func Retire(s *State) {
	if s.Cart != nil && s.Cart.CheckedOut {
		s.Cart = &Cart{CheckedOut: true}
	}
	if s.Article != nil {
		s.Article = publishedArticle
	}
}

// publishedArticle stands for every retired article. Apply replaces a
// state's Article and never changes one, so they can share it.
var publishedArticle = &Article{}

func (s *State) cart() *Cart {
	if s.Cart == nil {
		s.Cart = &Cart{}
	}
	if s.Cart.Lines == nil {
		s.Cart.Lines = map[string]Line{}
	}
	return s.Cart
}

func cartOpen(s *State) *schemas.Rejection {
	if s.Article != nil {
		return wrongKind("a cart", "an article")
	}
	if s.Cart != nil && s.Cart.CheckedOut {
		return reject(CodeCartCheckedOut, "cart is checked out and cannot change")
	}
	return nil
}

func wrongKind(want, have string) *schemas.Rejection {
	return reject(CodeWrongAggregate, fmt.Sprintf("aggregate id names %s, not %s", have, want))
}

func reject(code, detail string) *schemas.Rejection {
	return &schemas.Rejection{Code: code, Detail: detail}
}

func nonNil(tags []string) []string {
	if tags == nil {
		return []string{}
	}
	return tags
}

func without(ids []string, id string) []string {
	for i, v := range ids {
		if v == id {
			return append(ids[:i:i], ids[i+1:]...)
		}
	}
	return ids
}
