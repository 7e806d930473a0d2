package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The binary form of a State, as the processor keeps it in its local store
// and its changelog topic. Its first byte is the format's version, so a
// later build can read what an earlier one wrote.

const stateFormat = 1

const (
	kindNone byte = iota
	kindArticle
	kindCart
)

// MarshalState appends the binary form of a retired state to buf.
func MarshalState(buf []byte, s State) []byte {
	buf = append(buf, stateFormat)
	buf = binary.AppendUvarint(buf, uint64(s.Version))
	switch {
	case s.Article != nil:
		buf = append(buf, kindArticle)
	case s.Cart != nil:
		buf = append(buf, kindCart)
		if s.Cart.CheckedOut {
			return append(buf, 1)
		}
		buf = append(buf, 0)
		buf = binary.AppendUvarint(buf, uint64(len(s.Cart.Lines)))
		for _, id := range s.Cart.order {
			l, ok := s.Cart.Lines[id]
			if !ok {
				continue
			}
			buf = binary.AppendUvarint(buf, uint64(len(id)))
			buf = append(buf, id...)
			buf = binary.AppendVarint(buf, l.Quantity)
			buf = binary.AppendVarint(buf, l.UnitPriceCents)
		}
	default:
		buf = append(buf, kindNone)
	}
	return buf
}

// errTruncated reports a state whose bytes end too early.
var errTruncated = errors.New("aggregate state: truncated")

// UnmarshalState reads what MarshalState wrote.
func UnmarshalState(b []byte) (State, error) {
	var s State
	if len(b) == 0 {
		return s, errTruncated
	}
	if b[0] != stateFormat {
		return s, fmt.Errorf("aggregate state: format %d is not known to this build", b[0])
	}
	r := reader{b: b[1:]}
	s.Version = int64(r.uvarint())
	switch kind := r.byte(); kind {
	case kindNone:
	case kindArticle:
		s.Article = publishedArticle
	case kindCart:
		if r.byte() == 1 {
			s.Cart = &Cart{CheckedOut: true}
			break
		}
		n := r.uvarint()
		if n > MaxCartLines {
			return State{}, fmt.Errorf("aggregate state: %d cart lines, more than %d", n, MaxCartLines)
		}
		c := &Cart{Lines: make(map[string]Line, n), order: make([]string, 0, n)}
		for range n {
			id := r.string()
			if _, twice := c.Lines[id]; twice && r.err == nil {
				return State{}, fmt.Errorf("aggregate state: product %q is in the cart twice", id)
			}
			c.Lines[id] = Line{Quantity: r.varint(), UnitPriceCents: r.varint()}
			c.order = append(c.order, id)
		}
		s.Cart = c
	default:
		return State{}, fmt.Errorf("aggregate state: unknown kind %d", kind)
	}
	if r.err != nil {
		return State{}, r.err
	}
	if len(r.b) != 0 {
		return State{}, fmt.Errorf("aggregate state: %d bytes after its end", len(r.b))
	}
	return s, nil
}

// reader reads the parts of an encoded state; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 { return readVarint(r, binary.Uvarint) }

func (r *reader) varint() int64 { return readVarint(r, binary.Varint) }

func readVarint[T uint64 | int64](r *reader, decode func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := decode(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil || uint64(len(r.b)) < n {
		r.err = errTruncated
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
