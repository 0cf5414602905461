package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/proxy/webchannel"
)

// listenClient speaks the browser SDK's side of the Listen channel, against base (the
// proxy, or the emulator for the ground truth).
type listenClient struct {
	t    *testing.T
	hc   *http.Client
	base string // http://host:port
	db   string
}

func (h *harness) listenClient(base string) *listenClient {
	// A client of its own: the emulator closes channel connections it has answered
	// without saying so, and a write of the test reusing one would fail with EOF.
	hc := &http.Client{Timeout: h.http.Timeout, Transport: &http.Transport{DisableCompression: true}}
	h.t.Cleanup(hc.CloseIdleConnections)
	return &listenClient{t: h.t, hc: hc, base: base, db: "projects/" + h.project + "/databases/(default)"}
}

func (c *listenClient) url(query string) string {
	return c.base + "/google.firestore.v1.Firestore/Listen/channel?VER=8&database=" + url.QueryEscape(c.db) + query
}

func (c *listenClient) do(method, query, body string, hdr ...string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url(query), strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var sidOf = regexp.MustCompile(`"c","([^"]+)"`)

// open opens a session the SDK's way (headers field, first message in the handshake)
// and returns its SID.
func (c *listenClient) open(headers, first string) string {
	c.t.Helper()
	body := "headers=" + url.QueryEscape(headers) + "&count=1&ofs=0&req0___data__=" + url.QueryEscape(first)
	status, answer := c.do("POST", "&RID=1234&CVER=22&X-HTTP-Session-Id=gsessionid&zx=a&t=1", body)
	m := sidOf.FindStringSubmatch(answer)
	if status != 200 || m == nil {
		c.t.Fatalf("open: %d %q", status, answer)
	}
	return m[1]
}

func (c *listenClient) addTarget(id int, doc string) string {
	return `{"database":"` + c.db + `","addTarget":{"documents":{"documents":["` + c.db + `/documents/` + doc + `"]},"targetId":` + fmt.Sprint(id) + `}}`
}

// listenBack is an open backchannel, read message by message.
type listenBack struct {
	t     *testing.T
	body  io.ReadCloser
	rd    *bufio.Reader
	split webchannel.Splitter
	queue []webchannel.Entry
	done  bool
	last  int64
}

func (c *listenClient) back(sid string, aid int64, ci string) *listenBack {
	c.t.Helper()
	resp, err := c.hc.Get(c.url(fmt.Sprintf("&RID=rpc&SID=%s&AID=%d&CI=%s&TYPE=xmlhttp&zx=b&t=1", url.QueryEscape(sid), aid, ci)))
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("backchannel: %d %q", resp.StatusCode, b)
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	return &listenBack{t: c.t, body: resp.Body, rd: bufio.NewReader(resp.Body), last: aid}
}

// next returns the next entry, or ok=false once the answer ended.
func (b *listenBack) next() (webchannel.Entry, bool) {
	b.t.Helper()
	buf := make([]byte, 8192)
	for len(b.queue) == 0 {
		if b.done {
			return webchannel.Entry{}, false
		}
		n, err := b.rd.Read(buf)
		for _, seg := range b.split.Feed(buf[:n]) {
			es, perr := webchannel.ParseChunk(seg.Chunk)
			if seg.Chunk == nil || perr != nil {
				b.t.Fatalf("backchannel framing: %q", seg.Raw)
			}
			b.queue = append(b.queue, es...)
		}
		if err != nil {
			b.done = true
		}
	}
	e := b.queue[0]
	b.queue = b.queue[1:]
	b.last = e.ArrayID
	return e, true
}

// message returns the next ListenResponse (skipping noops), or nil once the answer
// ended. Anything else fails the test.
func (b *listenBack) message() *firestorepb.ListenResponse {
	b.t.Helper()
	for {
		e, ok := b.next()
		if !ok {
			return nil
		}
		if name, isControl := e.Control(); isControl {
			if name == "noop" {
				continue
			}
			b.t.Fatalf("control %q on the Listen backchannel", name)
		}
		m, _ := e.Message()
		resp := &firestorepb.ListenResponse{}
		if err := protojson.Unmarshal(m, resp); err != nil {
			b.t.Fatalf("%s is not a ListenResponse: %v", m, err)
		}
		return resp
	}
}

// normalizedListen clears what differs between two listens of the same data (resume
// tokens, read times).
func normalizedListen(r *firestorepb.ListenResponse) *firestorepb.ListenResponse {
	r = proto.Clone(r).(*firestorepb.ListenResponse)
	if tc := r.GetTargetChange(); tc != nil {
		tc.ResumeToken, tc.ReadTime = nil, nil
	}
	if d := r.GetDocumentDelete(); d != nil {
		d.ReadTime = nil
	}
	return r
}

// The browser SDK's Listen channel, served by the proxy's WebChannel server and
// relayed to an upstream gRPC Listen: a target sees what the emulator's own Listen
// channel sends (target added, the document, CURRENT), then a later write, in both
// backchannel modes; terminate ends the upstream stream.
func TestListenChannelRelaysAsTheEmulator(t *testing.T) {
	for _, ci := range []string{"0", "1"} { // streaming, long-poll
		t.Run("CI="+ci, func(t *testing.T) {
			h := newHarness(t, setup{})
			h.put("products/p1", `{"price":{"integerValue":"3"}}`)
			read := func(c *listenClient, sid string) func() *firestorepb.ListenResponse {
				var b *listenBack
				return func() *firestorepb.ListenResponse {
					for {
						if b == nil {
							b = c.back(sid, -1, ci)
						}
						if m := b.message(); m != nil {
							return m
						}
						last := b.last
						b = c.back(sid, last, ci) // a long poll ended: the next one acknowledges
					}
				}
			}
			direct, proxied := h.listenClient(h.emu.URL), h.listenClient(h.replicas[0].url)
			auth := "Authorization:" + owner + "\r\nx-goog-api-key:k\r\n"
			dsid := direct.open(auth, direct.addTarget(2, "products/p1"))
			psid := proxied.open(auth, proxied.addTarget(2, "products/p1"))
			dnext, pnext := read(direct, dsid), read(proxied, psid)
			for i := range 3 {
				d, p := dnext(), pnext()
				if !proto.Equal(normalizedListen(d), normalizedListen(p)) {
					t.Fatalf("message %d: proxy %v, emulator's channel %v", i, p, d)
				}
			}
			h.put("products/p1", `{"price":{"integerValue":"4"}}`)
			for {
				p := pnext()
				if dc := p.GetDocumentChange(); dc != nil {
					if got := dc.Document.Fields["price"].GetIntegerValue(); got != 4 {
						t.Fatalf("later change %v", p)
					}
					break
				}
			}
			if st, _ := proxied.do("POST", "&SID="+url.QueryEscape(psid)+"&RID=9&TYPE=terminate&zx=z&t=1", ""); st != 200 {
				t.Fatalf("terminate: %d", st)
			}
			waitFor(t, "the terminated session is freed", func() bool { return h.replicas[0].lch.srv.Len() == 0 })
		})
	}
}

// A message that is not a ListenRequest ends the stream as Firestore ends one with an
// error, then the session; ambiguous credentials and a database parameter that is not
// a database are refused before a session opens.
func TestListenChannelRefusals(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.listenClient(h.replicas[0].url)
	sid := c.open("", `{"notAField":1}`)
	b := c.back(sid, 0, "0")
	var got []string
	for e, ok := b.next(); ok; e, ok = b.next() {
		if name, _ := e.Control(); name != "noop" {
			m, _ := e.Message()
			got = append(got, name+string(m))
		}
	}
	if len(got) != 2 || !strings.Contains(got[0], `"status":"INVALID_ARGUMENT"`) || strings.Contains(got[0], "notAField") || got[1] != "close" {
		t.Fatalf("after a message that is not a ListenRequest the backchannel carried %q", got)
	}
	for name, open := range map[string]func() (int, string){
		"two Authorization": func() (int, string) {
			return c.do("POST", "&RID=1", "headers="+url.QueryEscape("Authorization:Bearer a\r\n")+"&count=0", "Authorization", "Bearer b")
		},
		"no database": func() (int, string) {
			return h.listenClient(h.replicas[0].url).do("POST", "&RID=1&database=x", "count=0")
		},
	} {
		if st, body := open(); st != 400 || !strings.Contains(body, `"INVALID_ARGUMENT"`) {
			t.Errorf("%s: %d %s", name, st, body)
		}
	}
}

// Browsers that vanish without terminating (tabs killed, networks gone), with a
// backchannel open or not, in streaming and long-poll mode: once the idle timeout has
// passed, nothing of them is left: no session, no goroutine serving one, no upstream
// Listen relay.
func TestListenChannelVanishedClientsAreFreed(t *testing.T) {
	h := newHarness(t, setup{listenChannel: ListenChannelOptions{NoopInterval: 50 * time.Millisecond, SessionIdle: 300 * time.Millisecond}})
	h.put("products/p1", `{"price":{"integerValue":"3"}}`)
	r := h.replicas[0]
	const n = 60
	for i := range n {
		c := h.listenClient(r.url)
		sid := c.open("Authorization:"+owner+"\r\n", c.addTarget(2, "products/p1"))
		switch i % 3 {
		case 0: // never opens a backchannel
		case 1: // streaming: reads the target's first answer, then goes away mid-answer
			b := c.back(sid, 0, "0")
			if b.message() == nil {
				t.Fatal("no first message")
			}
			b.body.Close()
		case 2: // long poll: one answer, no next poll
			b := c.back(sid, 0, "1")
			for b.message() != nil {
			}
		}
	}
	waitFor(t, "every vanished session expired", func() bool { return r.lch.srv.Len() == 0 })
	h.http.CloseIdleConnections()
	waitFor(t, "no goroutine serves a Listen session or its hub client", func() bool { return listenGoroutines() == 0 })
}

// listenGoroutines counts goroutines serving a Listen session: a WebChannel session's
// writer or waiter, the hub's client (its reader and writer).
func listenGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "webchannel.(*Session)") || strings.Contains(g, "fanout.(*client)") || strings.Contains(g, "fanout.(*passthrough)") || strings.Contains(g, "fanout.(*Hub).Serve") ||
			strings.Contains(g, "proxy.(*Proxy).openListenSession") {
			n++
		}
	}
	return n
}
