package kafka_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

func TestConnectionSettingsReachTheClient(t *testing.T) {
	conn := kafka.Connection{Brokers: []string{"127.0.0.1:1"}}
	cl, err := conn.NewClient(kgo.ClientID("own"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.ClientID); got != "own" {
		t.Fatalf("client id %v: a client's own options come after the connection's defaults", got)
	}
	conn.Opts = []kgo.Opt{kgo.ClientID("from-the-connection")}
	cl2, err := conn.NewClient(kgo.ClientID("own"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if got := cl2.OptValue(kgo.ClientID); got != "from-the-connection" {
		t.Fatalf("client id %v: the connection's Opts apply to every client, last", got)
	}
	cl3, err := kafka.Connection{Brokers: []string{"127.0.0.1:1"}}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cl3.Close()
	if got := cl3.OptValue(kgo.ClientID); got != kafka.DefaultClientID {
		t.Fatalf("client id %v, want the default %q", got, kafka.DefaultClientID)
	}
}

func TestConnectionNeedsBrokers(t *testing.T) {
	for _, c := range []kafka.Connection{{}, {Brokers: []string{""}}} {
		if _, err := c.NewClient(); err == nil || !strings.Contains(err.Error(), "Brokers") {
			t.Errorf("NewClient with %+v: %v, want an error naming Brokers", c, err)
		}
	}
}

// TestEveryClientComesFromTheEdge: outside this package and tests, nothing
// makes a franz-go client itself, so connection settings reach them all.
func TestEveryClientComesFromTheEdge(t *testing.T) {
	fset := token.NewFileSet()
	var found []string
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || path == filepath.Join("..", "kafka")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "kgo" && (sel.Sel.Name == "NewClient" || sel.Sel.Name == "NewGroupTransactSession") {
				found = append(found, fset.Position(sel.Pos()).String())
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Fatalf("franz-go clients made outside the kafka package: %v; use kafka.Connection.NewClient", found)
	}
}
