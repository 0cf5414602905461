package conformance

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestCommitWithVerifyWrite sends, byte for byte in shape, the commit the Firebase JS
// SDK sends at the end of a transaction that read a document it did not write: such a
// document becomes a "verify" write (a precondition with no mutation; the field is not in
// the published v1 protos, but Firestore and its emulator accept it). The proxy must
// forward it and answer what the emulator answers.
func TestCommitWithVerifyWrite(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	for _, tc := range []struct {
		name, addr string
	}{{"direct", st.emu.Addr}, {"proxied", st.addr}} {
		project := st.emu.NewProject(t)
		docs := "projects/" + project + "/databases/(default)/documents"
		base := "http://" + tc.addr + "/v1/" + docs
		// The lite SDK's request: text/plain, ?key=, a real write plus a verify of a
		// document read as missing.
		body := fmt.Sprintf(`{"writes":[`+
			`{"update":{"name":"%[1]s/farmers/f1","fields":{"visited":{"booleanValue":true}}}},`+
			`{"verify":"%[1]s/farmers/nobody","currentDocument":{"exists":false}}]}`, docs)
		req, err := http.NewRequest(http.MethodPost, base+":commit?key=conformance-api-key", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: commit with a verify write answered %d %s; the emulator accepts it (200) and the Firebase JS SDK sends it in every transaction that reads a document it does not write",
				tc.name, resp.StatusCode, strings.TrimSpace(string(b)))
		}
	}
}
