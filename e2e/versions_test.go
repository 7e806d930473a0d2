package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/roles"
)

// TestConflictingWritersWithExpectedVersions: two clients edit one article,
// each from the version its lookup gave in ETag; the second is refused
// with 409 version-conflict naming the version it missed, and its change
// is nowhere.
func TestConflictingWritersWithExpectedVersions(t *testing.T) {
	conn := kappatest.Kafka(t)
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	sys := newSystem(t, conn, pg, ch, 2, 20*time.Millisecond)
	sys.start("postgres", roles.ProjectPostgres)

	post := func(body string, header map[string]string) (int, map[string]any) {
		h := map[string]string{"Prefer": "wait=20"}
		for k, v := range header {
			h[k] = v
		}
		status, out := sys.do(t, http.MethodPost, "/v1/commands", "application/json", []byte(body), h)
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		return status, v
	}
	const publish = `{"type":"article.publish","aggregate_id":"a-1","data":{"author_id":"u1","title":"First","body":"b"}}`
	if status, v := post(publish, map[string]string{"If-None-Match": "*"}); status != http.StatusOK {
		t.Fatalf("publish of a new article: %d %v", status, v)
	}
	status, v := post(publish, map[string]string{"If-None-Match": "*"})
	if status != http.StatusConflict || v["type"] != "urn:kappa:problem:version-conflict" || !strings.Contains(v["detail"].(string), "at version 1") {
		t.Errorf("publish of an existing article with If-None-Match: %d %v", status, v)
	}
	// Both writers read version 1.
	var etag string
	sys.eventually(t, func() bool {
		var h http.Header
		status, _ := sys.doCapture(t, http.MethodGet, "/v1/articles/a-1", "", nil, nil, &h)
		etag = h.Get("ETag")
		return status == http.StatusOK
	})
	if etag != `"1"` {
		t.Fatalf("ETag of the new article = %q, want \"1\"", etag)
	}
	update := func(title string) string {
		return `{"type":"article.update","aggregate_id":"a-1","data":{"title":"` + title + `"}}`
	}
	if status, v := post(update("Mine"), map[string]string{"If-Match": etag}); status != http.StatusOK {
		t.Fatalf("the first writer: %d %v", status, v)
	}
	status, v = post(update("Theirs"), map[string]string{"If-Match": etag})
	if status != http.StatusConflict || v["type"] != "urn:kappa:problem:version-conflict" || v["code"] != "version_conflict" ||
		!strings.Contains(v["detail"].(string), "at version 1; it is at version 2") {
		t.Errorf("the second writer: %d %v", status, v)
	}
	// The same in the body, as a batch carries it.
	status, v = post(`{"type":"article.update","aggregate_id":"a-1","data":{"title":"Again"},"expected_version":1}`, nil)
	if status != http.StatusConflict || v["code"] != "version_conflict" {
		t.Errorf("a stale expected_version in the body: %d %v", status, v)
	}
	sys.eventually(t, func() bool {
		var h http.Header
		status, out := sys.doCapture(t, http.MethodGet, "/v1/articles/a-1", "", nil, nil, &h)
		var a struct{ Title string }
		return status == http.StatusOK && json.Unmarshal(out, &a) == nil && a.Title == "Mine" && h.Get("ETag") == `"2"`
	})
}
