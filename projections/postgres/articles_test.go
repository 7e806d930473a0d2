package postgres_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Several events of one article in one batch go into rounds of set-based
// statements; whatever the batches and redeliveries, the article ends as
// its events say, and an article updated before it exists stays absent.
func TestArticleEventsInOneBatchApplyInOrder(t *testing.T) {
	st := kappatest.NewStream("events")
	st.Command(0, "a1", schemas.ArticlePublishedV1{AuthorID: "u1", Title: "T1", Body: "B1", Tags: []string{"go"}})
	st.Command(0, "a2", schemas.ArticlePublishedV1{AuthorID: "u2", Title: "Other", Body: "Other", Tags: nil})
	st.Command(0, "a1", schemas.ArticleUpdatedV1{Title: ptr("T2")})
	st.Command(0, "a1", schemas.ArticleUpdatedV1{Tags: &[]string{}})
	st.Command(0, "a1", schemas.ArticleUpdatedV1{Body: ptr("B3"), Tags: &[]string{"kafka", "sql"}})
	st.Command(0, "a1", schemas.ArticleUpdatedV1{Title: ptr("T4")})
	st.Command(0, "a9", schemas.ArticleUpdatedV1{Title: ptr("never published")})

	for _, size := range []int{1, 2, 3, len(st.Records)} {
		t.Run(fmt.Sprintf("batches of %d", size), func(t *testing.T) {
			s := open(t, kappatest.Postgres(t))
			for i := 0; i < len(st.Records); i += size {
				batch := st.Records[i:min(i+size, len(st.Records))]
				// Each batch twice: the second time is a redelivery.
				for range 2 {
					if err := s.Apply(t.Context(), batch); err != nil {
						t.Fatal(err)
					}
				}
			}
			a1, err := s.Article(t.Context(), "a1")
			if err != nil {
				t.Fatal(err)
			}
			if a1.Title != "T4" || a1.Body != "B3" || !reflect.DeepEqual(a1.Tags, []string{"kafka", "sql"}) || a1.Version != 5 || a1.AuthorID != "u1" {
				t.Errorf("a1 = %+v; want title T4, body B3, tags [kafka sql], version 5, author u1", a1)
			}
			a2, err := s.Article(t.Context(), "a2")
			if err != nil {
				t.Fatal(err)
			}
			if a2.Title != "Other" || len(a2.Tags) != 0 || a2.Version != 1 {
				t.Errorf("a2 = %+v; want title Other, no tags, version 1", a2)
			}
			if a9, err := s.Article(t.Context(), "a9"); err == nil {
				t.Errorf("a9 exists after an update without a publish: %+v", a9)
			}
		})
	}
}
