package postgres

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// articleRounds are a batch's article events as set-based statements. The
// n-th event of each article in the batch goes into round n, and rounds
// run in order, so that every statement touches an article at most once
// and each event is still applied on top of the one before it. Each event
// keeps its version guard, so a redelivered event is a no-op.
type articleRounds struct {
	rounds []articleRound
	seen   map[string]int // article id -> its events so far in the batch
}

type articleRound struct {
	published publishedRows
	updated   updatedRows
}

// publishedRows are article.published events as the columns one INSERT
// unnests. Tags travel as JSON arrays: Postgres cannot unnest an array of
// arrays of different lengths.
type publishedRows struct {
	ids, authors, titles, bodies, tags []string
	versions                           []int64
	at                                 []time.Time
}

// updatedRows are article.updated events; a nil field leaves the column.
type updatedRows struct {
	ids                  []string
	titles, bodies, tags []*string
	versions             []int64
	at                   []time.Time
}

const publishArticles = `INSERT INTO articles (id, author_id, title, body, tags, version, published_at, updated_at)
	SELECT t.id, t.author_id, t.title, t.body, ARRAY(SELECT jsonb_array_elements_text(t.tags)), t.version, t.at, t.at
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bigint[], $7::timestamptz[])
		AS t(id, author_id, title, body, tags, version, at)
	ON CONFLICT (id) DO UPDATE SET author_id = EXCLUDED.author_id, title = EXCLUDED.title, body = EXCLUDED.body,
		tags = EXCLUDED.tags, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
	WHERE articles.version < EXCLUDED.version`

const updateArticles = `UPDATE articles a SET title = coalesce(t.title, a.title), body = coalesce(t.body, a.body),
		tags = CASE WHEN t.tags IS NULL THEN a.tags ELSE ARRAY(SELECT jsonb_array_elements_text(t.tags)) END,
		version = t.version, updated_at = t.at
	FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bigint[], $6::timestamptz[])
		AS t(id, title, body, tags, version, at)
	WHERE a.id = t.id AND a.version < t.version`

func (a *articleRounds) add(r schemas.Record) error {
	e := r.Envelope
	if a.seen == nil {
		a.seen = map[string]int{}
	}
	n := a.seen[schemas.KeyOf(e)]
	if n == len(a.rounds) {
		a.rounds = append(a.rounds, articleRound{})
	}
	round := &a.rounds[n]
	switch p := r.Payload.(type) {
	case schemas.ArticlePublishedV1:
		tags, err := json.Marshal(nonNilTags(p.Tags))
		if err != nil {
			return err
		}
		pub := &round.published
		pub.ids, pub.authors, pub.titles = append(pub.ids, schemas.KeyOf(e)), append(pub.authors, p.AuthorID), append(pub.titles, p.Title)
		pub.bodies, pub.tags = append(pub.bodies, p.Body), append(pub.tags, string(tags))
		pub.versions, pub.at = append(pub.versions, e.AggregateVersion), append(pub.at, e.Time)
	case schemas.ArticleUpdatedV1:
		var tags *string
		if p.Tags != nil {
			text, err := json.Marshal(nonNilTags(*p.Tags))
			if err != nil {
				return err
			}
			s := string(text)
			tags = &s
		}
		upd := &round.updated
		upd.ids, upd.titles, upd.bodies, upd.tags = append(upd.ids, schemas.KeyOf(e)), append(upd.titles, p.Title), append(upd.bodies, p.Body), append(upd.tags, tags)
		upd.versions, upd.at = append(upd.versions, e.AggregateVersion), append(upd.at, e.Time)
	default:
		return fmt.Errorf("no mapping for %T", p)
	}
	a.seen[schemas.KeyOf(e)] = n + 1
	return nil
}

// queue adds the rounds' statements to q, in round order.
func (a *articleRounds) queue(q *pgx.Batch) {
	for _, r := range a.rounds {
		if p := r.published; len(p.ids) > 0 {
			q.Queue(publishArticles, p.ids, p.authors, p.titles, p.bodies, p.tags, p.versions, p.at)
		}
		if u := r.updated; len(u.ids) > 0 {
			q.Queue(updateArticles, u.ids, u.titles, u.bodies, u.tags, u.versions, u.at)
		}
	}
}
