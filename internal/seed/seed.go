// Package seed loads documents into Firestore (the emulator or a real project) with the
// official Go client: the built-in Harvest Hub sample (Sample) or a user's JSON file
// (ParseJSON), written by Load.
//
// Promises: Sample is deterministic (the same documents, byte for byte, every call);
// Load overwrites each listed document with exactly the given fields and leaves every
// other document alone; ParseJSON rejects a malformed file with an error naming the
// line, the document or the field at fault, before anything is written.
//
// Concurrency: the functions keep no state; Docs values are not safe for concurrent
// mutation, like any map.
package seed

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
)

// Docs maps document paths ("products/p1", "users/u1/orders/o1") to their fields.
//
// Field values are nil, bool, int64, float64, string, time.Time, Ref, []any and
// map[string]any, nested freely (Firestore forbids arrays directly inside arrays).
type Docs map[string]map[string]any

// Ref is a reference to the document at a path ("farmers/f1"), in the database Load
// writes to.
type Ref string

// maxBatchWrites is how many writes go in one commit. Firestore accepts 500.
const maxBatchWrites = 500

// Load writes every document of docs with the client (set: create or overwrite) and
// returns how many it wrote. Documents are written in path order in atomic commits of
// up to 500; on error, the commits before the failing one stay written.
//
// It uses commits rather than BulkWriter on purpose: commit needs no admin credentials
// on the emulator (BulkWriter's batchWrite does), so Load works with any client,
// including a REST client WithoutAuthentication, and 500 writes a round trip beats
// BulkWriter's 20 against a slow emulator.
func Load(ctx context.Context, client *firestore.Client, docs Docs) (int, error) {
	paths := make([]string, 0, len(docs))
	for p := range docs {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	written := 0
	for start := 0; start < len(paths); start += maxBatchWrites {
		chunk := paths[start:min(start+maxBatchWrites, len(paths))]
		//lint:ignore SA1019 WriteBatch is deprecated in favour of BulkWriter, which needs admin credentials on the emulator; see the doc comment.
		batch := client.Batch()
		for _, p := range chunk {
			if err := checkDocPath(p); err != nil {
				return written, err
			}
			fields, err := resolve(client, docs[p])
			if err != nil {
				return written, fmt.Errorf("document %s: %w", p, err)
			}
			batch.Set(client.Doc(p), fields)
		}
		if _, err := batch.Commit(ctx); err != nil {
			return written, fmt.Errorf("commit documents %s..%s: %w", chunk[0], chunk[len(chunk)-1], err)
		}
		written += len(chunk)
	}
	return written, nil
}

// resolve returns a copy of fields with every Ref turned into the client's
// *firestore.DocumentRef.
func resolve(client *firestore.Client, fields map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		r, err := resolveValue(client, v)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", k, err)
		}
		out[k] = r
	}
	return out, nil
}

func resolveValue(client *firestore.Client, v any) (any, error) {
	switch v := v.(type) {
	case Ref:
		if err := checkDocPath(string(v)); err != nil {
			return nil, fmt.Errorf("reference: %w", err)
		}
		return client.Doc(string(v)), nil
	case map[string]any:
		return resolve(client, v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			r, err := resolveValue(client, e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = r
		}
		return out, nil
	case nil, bool, int64, float64, string, time.Time:
		return v, nil
	case int:
		return int64(v), nil
	default:
		return nil, fmt.Errorf("unsupported value type %T", v)
	}
}

// checkDocPath accepts "collection/doc[/collection/doc...]".
func checkDocPath(p string) error {
	segs := strings.Split(p, "/")
	if len(segs)%2 != 0 {
		return fmt.Errorf("%q is not a document path: it needs an even number of segments (collection/document[/collection/document...])", p)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || (strings.HasPrefix(s, "__") && strings.HasSuffix(s, "__")) {
			return fmt.Errorf("%q is not a document path: segment %q is empty or reserved", p, s)
		}
	}
	return nil
}
