package processor

import (
	"crypto/sha1" //nolint:gosec // UUID version 5 is SHA-1 by definition (RFC 9562); it names, it does not protect.
	"strconv"

	"github.com/google/uuid"

	"github.com/kappa-cqrs/kappa/schemas"
)

// eventIDSpace namespaces the deterministic ids of events and outcomes:
// the same command always yields the same event ids.
var eventIDSpace = uuid.MustParse("6f1c3a52-8d0e-4b8a-9a43-2f0b1c7e5d10")

// eventID is the id of a command's i-th event: uuid.NewSHA1(eventIDSpace,
// "<command id>/<i>"), built in a buffer on the stack (uuid's own takes
// five allocations; a transaction makes one id per event and outcome).
func eventID(commandID string, i int) string {
	var scratch [128]byte
	name := append(append(scratch[:0], commandID...), '/')
	return nameID(strconv.AppendInt(name, int64(i), 10))
}

// outcomeID is the id of the outcome of the command at a position:
// uuid.NewSHA1(eventIDSpace, "<command id>/outcome/<position>").
func outcomeID(commandID string, at schemas.Position) string {
	var scratch [128]byte
	name := append(append(scratch[:0], commandID...), "/outcome/"...)
	name = strconv.AppendInt(name, int64(at.Partition), 10)
	name = append(name, ':')
	return nameID(strconv.AppendInt(name, at.Offset, 10))
}

// nameID is uuid.NewSHA1(eventIDSpace, name).String().
func nameID(name []byte) string {
	var scratch [16 + 128]byte
	sum := sha1.Sum(append(append(scratch[:0], eventIDSpace[:]...), name...)) //nolint:gosec // see the import
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 0x50 // version 5
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id.String()
}
