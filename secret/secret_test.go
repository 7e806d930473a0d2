package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kappa-cqrs/kappa/secret"
)

func TestASecretIsSeenNowhere(t *testing.T) {
	s := secret.New("hunter2")
	type config struct {
		User     string
		Password secret.Value
	}
	c := config{User: "kappa", Password: s}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("config", "password", s, "config", c)
	encoded, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c), "%s": fmt.Sprintf("%s", s), //nolint:staticcheck // S1025: fmt is what this checks
		"error": fmt.Errorf("connect with %v: refused", s).Error(), "slog": log.String(), "json": string(encoded),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("%s shows the secret: %s", name, out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the secret")
	}
}

func TestFromFileDropsTheTrailingNewline(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := secret.FromFile(file)
	if err != nil || s.Reveal() != "s3cret" {
		t.Fatalf("FromFile = %q, %v", s.Reveal(), err)
	}
	if _, err := secret.FromFile(file + ".missing"); err == nil {
		t.Fatal("a missing file gave no error")
	}
}
