package kafka

import "github.com/twmb/franz-go/pkg/kgo"

// Header returns the value of a record's first header with key.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// HeaderMap returns a record's headers by key; a repeated key keeps its
// last value.
func HeaderMap(r *kgo.Record) map[string]string {
	h := make(map[string]string, len(r.Headers))
	for _, hd := range r.Headers {
		h[hd.Key] = string(hd.Value)
	}
	return h
}
