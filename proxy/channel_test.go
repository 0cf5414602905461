package proxy

import (
	"net/http"
	"net/url"
	"regexp"
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
)

// The browser SDK's WebChannel round trips (handshake, forward-channel POST, long-poll
// backchannel GET) through the proxy to the real emulator, which closes its connection
// after every channel answer without saying so: every one is answered, none with the
// proxy's 503. Before, about half were "the Firestore upstream did not answer".
func TestWebChannelRoundTripsAgainstTheEmulator(t *testing.T) {
	emuURL := testbed.Emulator(t).URL // no meter between: its net/http client has the very problem
	h := newHarness(t, setup{upstream: func(int, string) string { return emuURL }})
	db := "projects/" + h.project + "/databases/(default)"
	base := "/google.firestore.v1.Firestore/Listen/channel?VER=8&database=" + url.QueryEscape(db)
	add := `{"database":"` + db + `","addTarget":{"documents":{"documents":["` + db + `/documents/products/p1"]},"targetId":2}}`
	remove := `{"database":"` + db + `","removeTarget":2}`
	sidOf := regexp.MustCompile(`"c","([^"]+)"`)
	form := []string{"Content-Type", "application/x-www-form-urlencoded", "Authorization", ""}
	const rounds = 15
	for i := 0; i < rounds; i++ {
		hs := h.via(0, "POST", base+"&RID=1&CVER=22&X-HTTP-Session-Id=gsessionid&zx=a&t=1",
			"count=1&ofs=0&req0___data__="+url.QueryEscape(add), form...)
		if hs.status != http.StatusOK {
			t.Fatalf("round %d: handshake: %v", i, hs)
		}
		m := sidOf.FindSubmatch(hs.body)
		if m == nil {
			t.Fatalf("round %d: no session id in the handshake answer %q", i, hs.body)
		}
		sid := url.QueryEscape(string(m[1]))
		back := h.via(0, "GET", base+"&SID="+sid+"&RID=rpc&AID=0&CI=1&TYPE=xmlhttp&zx=b&t=1", "", "Authorization", "")
		if back.status != http.StatusOK {
			t.Fatalf("round %d: long-poll backchannel: %v", i, back)
		}
		fwd := h.via(0, "POST", base+"&SID="+sid+"&RID=2&AID=1&zx=c&t=1",
			"count=1&ofs=1&req0___data__="+url.QueryEscape(remove), form...)
		if fwd.status != http.StatusOK {
			t.Fatalf("round %d: forward channel: %v", i, fwd)
		}
	}
}
