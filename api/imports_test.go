package api_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestTheAPIImportsNoProjectionOrAggregate: the API maps the intake's
// errors and reads through its own interface; a projection or the
// aggregates would tie HTTP to a store or to business rules.
func TestTheAPIImportsNoProjectionOrAggregate(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(path, "kappa/projections") || strings.Contains(path, "kappa/producer/aggregate") {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
