// Package kafka is Kappa's edge to Kafka: every client of the project is
// made by Connection.NewClient, so that the connection settings (seed
// brokers, client id, and whatever else reaches every client: TLS, SASL,
// hooks) apply everywhere; the codec between the envelopes of schemas and
// franz-go records; topic names and creation; and end, stable and
// committed offset lookups. franz-go's types stay inside this package and
// the packages that consume or produce through it.
package kafka

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Connection says how Kappa reaches Kafka. Zero values take the documented
// defaults.
type Connection struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// ClientID names Kappa's clients in the broker's logs, metrics and
	// quotas. Default "kappa".
	ClientID string
	// TLS, if set, encrypts every connection to the brokers. Default none.
	TLS *TLS
	// SASL, if set, authenticates every client. Default none.
	SASL *SASL
	// Opts are further franz-go options for every client, applied after
	// the options of the client itself: tests, hooks, dialers.
	Opts []kgo.Opt
}

// DefaultClientID is the client id of Kappa's clients unless set.
const DefaultClientID = "kappa"

// Validate reports every problem of the connection at once.
func (c Connection) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka: Brokers is required"))
	}
	for _, b := range c.Brokers {
		if b == "" {
			errs = append(errs, errors.New("kafka: Brokers has an empty address"))
		}
	}
	if c.SASL != nil {
		errs = append(errs, c.SASL.validate()...)
	}
	if c.TLS != nil {
		if _, err := c.TLS.Config(); err != nil {
			errs = append(errs, fmt.Errorf("kafka: %w", err))
		}
	}
	return errors.Join(errs...)
}

// options are the connection's options around a client's own.
func (c Connection) options(own []kgo.Opt) ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	security, err := c.security()
	if err != nil {
		return nil, err
	}
	id := c.ClientID
	if id == "" {
		id = DefaultClientID
	}
	opts := make([]kgo.Opt, 0, 2+len(security)+len(own)+len(c.Opts))
	opts = append(opts, kgo.SeedBrokers(c.Brokers...), kgo.ClientID(id))
	opts = append(opts, security...)
	opts = append(opts, own...)
	return append(opts, c.Opts...), nil
}

// NewClient returns a franz-go client with the connection's settings and
// the client's own options. It does not wait for the broker.
func (c Connection) NewClient(opts ...kgo.Opt) (*kgo.Client, error) {
	all, err := c.options(opts)
	if err != nil {
		return nil, err
	}
	return kgo.NewClient(all...)
}

// NewGroupTransactSession returns a franz-go transactional group session
// (KIP-447) with the connection's settings and the session's own options,
// speaking transactions version 1 on every cluster (TransactionsV1).
func (c Connection) NewGroupTransactSession(opts ...kgo.Opt) (*kgo.GroupTransactSession, error) {
	all, err := c.options(append([]kgo.Opt{TransactionsV1()}, opts...))
	if err != nil {
		return nil, err
	}
	return kgo.NewGroupTransactSession(all...)
}

// TransactionsV1 keeps a transactional client on the transaction
// protocol of version 1 even where the cluster finalized
// transaction.version 2, Kafka 4's default (KIP-890 part 2). With
// version 2, franz-go's producer now and then has a produce refused as
// out of order and the transaction stalls for seconds (a 4.1 s
// transaction in 90 s at 7,600 commands/s, docs/PERFORMANCE.md); with
// version 1 none. franz-go opts into version 2 only if EndTxn v5 may be
// sent, and brokers serve the older versions with version 1's
// transactions, so capping it is enough and no cluster needs its feature
// pinned.
func TransactionsV1() kgo.Opt {
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	return kgo.MaxVersions(versions)
}

// DurableProducer are the options of a producer whose writes must be on
// every in-sync replica before they count (acks=all, idempotent), batched
// with Kappa's compression.
func DurableProducer() []kgo.Opt {
	return []kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks()), Compression()}
}
