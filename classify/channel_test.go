package classify

import "testing"

// The web SDK's WebChannel endpoints are Listen and Write (metrics say "listen" and
// "write", the proxy gives them the stream budget), forwarded untouched; any other
// path under the service is refused (it could be a write).
func TestWebChannelPathsAreListenAndWrite(t *testing.T) {
	for _, c := range []struct {
		method, path string
		op           Op
	}{
		{"POST", "/google.firestore.v1.Firestore/Listen/channel", Listen},
		{"GET", "/google.firestore.v1.Firestore/Listen/channel", Listen},
		{"POST", "/google.firestore.v1.Firestore/Write/channel", WriteChannel},
		{"GET", "/google.firestore.v1.Firestore/Write/channel", WriteChannel},
	} {
		req, err := Classify(c.method, c.path, "VER=8&RID=1", []byte("count=1&ofs=0"))
		if err != nil || req.Op != c.op || req.Kind != Bypass {
			t.Errorf("%s %s: op %v kind %v err %v; want %v, Bypass", c.method, c.path, req.Op, req.Kind, err, c.op)
		}
	}
	for _, path := range []string{"/google.firestore.v1.Firestore/Commit/channel", "/google.firestore.v1.Firestore/Listen/channelx"} {
		if req, err := Classify("POST", path, "", nil); err == nil || req.Op == Listen || req.Op == WriteChannel {
			t.Errorf("POST %s: op %v err %v; want refused", path, req.Op, err)
		}
	}
	if Listen.String() != "listen" || WriteChannel.String() != "write" {
		t.Errorf("op names %q %q", Listen.String(), WriteChannel.String())
	}
}
