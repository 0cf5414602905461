package proxy

// The Write channel as a write path, end to end: a small Go client speaks the WebChannel
// wire exactly as firebase 12.19.0's full SDK does (the bodies and URLs below are those
// it sent to the emulator), through the proxy to the real emulator.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy/webchannel"
)

// channelClient is one Write-channel session as the SDK opens it: the opening POST
// (Authorization in its "headers" field, the handshake message), a streaming
// backchannel GET, then forward POSTs of WriteRequests.
type channelClient struct {
	t        *testing.T
	base     string // the replica's URL
	database string
	http     *http.Client
	sid      string
	rid      int
	nextMap  int
	token    string // the last streamToken

	entries chan webchannel.Entry // backchannel arrays, in order
	mu      sync.Mutex
	raw     []byte // every backchannel byte received
	done    chan struct{}
	once    bool // one backchannel GET only (a scripted upstream)
}

func (c *channelClient) url(params string) string {
	return c.base + writeChannelPath + "?VER=8&database=" + url.QueryEscape(c.database) + "&" + params +
		"&zx=" + testbed.RandomHex(6) + "&t=1"
}

func openChannel(t *testing.T, base, project, auth string) *channelClient {
	t.Helper()
	c := &channelClient{
		t: t, base: base, database: "projects/" + project + "/databases/(default)",
		http:    &http.Client{Transport: &http.Transport{DisableCompression: true}},
		rid:     1000,
		entries: make(chan webchannel.Entry, 64),
		done:    make(chan struct{}),
	}
	t.Cleanup(c.http.CloseIdleConnections)
	headers := "X-Goog-Api-Client:gl-js/ fire/12.19.0\r\nContent-Type:text/plain\r\n"
	if auth != "" {
		headers += "Authorization:" + auth + "\r\n"
	}
	body := "headers=" + url.QueryEscape(headers) + "&" + c.forms(fmt.Sprintf(`{"database":%q}`, c.database))
	resp := c.post(c.url(fmt.Sprintf("RID=%d&CVER=22&X-HTTP-Session-Id=gsessionid", c.rid)), body)
	var sp webchannel.Splitter
	for _, seg := range sp.Feed(resp) {
		if es, err := webchannel.ParseChunk(seg.Chunk); err == nil {
			c.sid, _ = webchannel.SessionID(es)
		}
	}
	if c.sid == "" {
		t.Fatalf("the opening answer told no SID: %q", resp)
	}
	c.backchannel()
	if m := c.nextMessage("the handshake's answer"); m["streamToken"] == nil {
		t.Fatalf("handshake answer without a streamToken: %v", m)
	}
	return c
}

// forms encodes messages as the next maps of a forward POST.
func (c *channelClient) forms(msgs ...string) string {
	parts := []string{fmt.Sprintf("count=%d", len(msgs)), fmt.Sprintf("ofs=%d", c.nextMap)}
	for i, m := range msgs {
		parts = append(parts, fmt.Sprintf("req%d___data__=%s", i, url.QueryEscape(m)))
	}
	c.nextMap += len(msgs)
	return strings.Join(parts, "&")
}

// post sends a forward POST. Like WebChannel, it sends the same maps again when the
// POST failed (the upstream of these tests sometimes drops a reused connection).
func (c *channelClient) post(u, body string) []byte {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		status, b := c.postOnce(u, body)
		if status == http.StatusOK {
			return b
		}
		if status != http.StatusServiceUnavailable || attempt == 5 {
			c.t.Fatalf("forward POST: %d %s", status, b)
		}
	}
}

func (c *channelClient) postOnce(u, body string) (int, []byte) {
	c.t.Helper()
	resp, err := c.http.Post(u, "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// writeOnce sends one WriteRequest once and returns the POST's status and body.
func (c *channelClient) writeOnce(writes ...string) (int, []byte) {
	c.t.Helper()
	msg := fmt.Sprintf(`{"streamToken":%q,"writes":[%s]}`, c.token, strings.Join(writes, ","))
	c.rid++
	return c.postOnce(c.url(fmt.Sprintf("SID=%s&RID=%d&AID=0", url.QueryEscape(c.sid), c.rid)), c.forms(msg))
}

// backchannel keeps a streaming GET (CI=0) open and feeds its arrays to c.entries; like
// WebChannel it reopens a backchannel that failed or ended, with AID the last array it
// received, until the test ends (or closeAfter arrays were received, when set).
func (c *channelClient) backchannel() {
	stop := make(chan struct{})
	c.t.Cleanup(func() { close(stop) })
	go func() {
		defer close(c.done)
		defer close(c.entries)
		var aid int64
		for failures := 0; failures < 5; {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.http.Get(c.url(fmt.Sprintf("RID=rpc&SID=%s&AID=%d&CI=0&TYPE=xmlhttp", url.QueryEscape(c.sid), aid)))
			if err != nil {
				return
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				failures++
				continue
			}
			go func() { <-stop; resp.Body.Close() }()
			var sp webchannel.Splitter
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				c.mu.Lock()
				c.raw = append(c.raw, buf[:n]...)
				c.mu.Unlock()
				for _, seg := range sp.Feed(buf[:n]) {
					es, _ := webchannel.ParseChunk(seg.Chunk)
					for _, e := range es {
						aid = max(aid, e.ArrayID)
						c.entries <- e
					}
				}
				if err != nil {
					break
				}
			}
			resp.Body.Close()
			if c.once {
				return
			}
		}
	}()
}

// nextMessage waits for the next data message on the backchannel (keep-alives skipped).
func (c *channelClient) nextMessage(what string) map[string]any {
	c.t.Helper()
	for {
		select {
		case e, ok := <-c.entries:
			if !ok {
				c.t.Fatalf("the backchannel ended while waiting for %s", what)
			}
			m, ok := e.Message()
			if !ok {
				continue
			}
			var v map[string]any
			if err := json.Unmarshal(m, &v); err != nil {
				c.t.Fatalf("%s: %v", what, err)
			}
			if tok, ok := v["streamToken"].(string); ok {
				c.token = tok
			}
			return v
		case <-time.After(30 * time.Second):
			c.t.Fatalf("no message on the backchannel for %s", what)
		}
	}
}

// write sends one WriteRequest with writes (REST JSON Write objects).
func (c *channelClient) write(writes ...string) {
	c.t.Helper()
	msg := fmt.Sprintf(`{"streamToken":%q,"writes":[%s]}`, c.token, strings.Join(writes, ","))
	c.rid++
	c.post(c.url(fmt.Sprintf("SID=%s&RID=%d&AID=0", url.QueryEscape(c.sid), c.rid)), c.forms(msg))
}

// channelEventRules: sharedRules, with events on the farmers' products (a rule for
// every document a group query over products may return, so it is cached).
const channelEventRules = `
  - match: /farmers/{f}/products/{p}
    ttl: 10m
    scope: shared
    negative_ttl: 10m
    events: true
  - match: /farmers/{f}
    ttl: 10m
    scope: shared
  - match: /products/{p}
    ttl: 10m
    scope: shared
  - match: /{document=**}
    ttl: 10m
`

// counterSum is the sum of a metric family's series on a replica's registry.
func counterSum(t *testing.T, r *replica, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// channelWrites are the writes of one WriteRequest over farmers/<f>/products, as the
// SDK encodes them: an update of a (mask, must exist), a delete of b, a create of c.
func channelWrites(h *harness, f string) []string {
	return []string{
		fmt.Sprintf(`{"update":{"name":%q,"fields":%s},"updateMask":{"fieldPaths":["status"]},"currentDocument":{"exists":true}}`,
			h.name("farmers/"+f+"/products/a"), on),
		fmt.Sprintf(`{"delete":%q}`, h.name("farmers/"+f+"/products/b")),
		fmt.Sprintf(`{"update":{"name":%q,"fields":%s},"currentDocument":{"exists":false}}`,
			h.name("farmers/"+f+"/products/c"), on),
	}
}

// A write on the Write channel is a write like a REST commit: by the time the client
// has its acknowledgement, every dependent read (get, list, query, group query,
// batchGet, count, collection ids) is fresh on the writing replica and on another one
// sharing Redis, its events are confirmed or kept, and they are the events the same
// REST commit yields (types, subjects, routing keys, deterministic ids, authhash of the
// Authorization the SDK sent inside the channel's opening request).
func TestWriteChannelWriteInvalidatesAndEmitsBeforeItsAck(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, setup{
		replicas: 2, redis: redisAddr, rules: channelEventRules,
		emitter: true, amqp: brokerURL, events: []string{fmt.Sprintf("exchange: %q", q.exchange), "old_value: true"},
	})
	waitBroker(t, h.replicas[0])
	seed := func(f string) {
		h.put("farmers/"+f, `{"name":{"stringValue":"farmer"}}`)
		h.put("farmers/"+f+"/products/a", off)
		h.put("farmers/"+f+"/products/b", on)
	}
	seed("wc")
	reads := h.readsOf("wc")
	before := map[string]string{}
	for _, r := range reads {
		before[r.name] = normalized(t, h.direct(r.method, r.path, r.body).body)
		for rep := range h.replicas {
			h.via(rep, r.method, r.path, r.body)
			if a := h.via(rep, r.method, r.path, r.body); !isHit(a.cache()) {
				t.Fatalf("replica %d, %s: not cached before the write: %v", rep, r.name, a)
			}
		}
	}

	c := openChannel(t, h.replicas[0].url, h.project, owner)
	kept := func() float64 {
		return counterSum(t, h.replicas[0], "harvest_events_confirmed_total") +
			counterSum(t, h.replicas[0], "harvest_events_outboxed_total")
	}
	keptBefore := kept()
	c.write(channelWrites(h, "wc")...)
	ack := c.nextMessage("the write's acknowledgement")
	if results, _ := ack["writeResults"].([]any); len(results) != 3 {
		t.Fatalf("acknowledgement %v, want 3 writeResults", ack)
	}
	if got := kept() - keptBefore; got < 3 {
		t.Errorf("when the client had its acknowledgement, %v of the write's 3 events were confirmed or kept", got)
	}
	for _, r := range reads {
		truth := normalized(t, h.direct(r.method, r.path, r.body).body)
		if truth == before[r.name] && r.name != "collectionIds" {
			t.Fatalf("%s: the write did not change the emulator's answer; the test proves nothing", r.name)
		}
		for rep, who := range []string{"the writing replica", "the other replica"} {
			got := h.via(rep, r.method, r.path, r.body)
			if g := normalized(t, got.body); g != truth {
				t.Errorf("%s on %s after a Write-channel write: served %s\n got  %s\n want %s", r.name, who, got.cache(), g, truth)
			}
		}
	}

	var fromChannel []delivery
	for i, w := range []want{
		{typ: "updated", doc: "farmers/wc/products/a", index: 0, fields: map[string]string{"status": `{"stringValue":"on"}`}, auth: owner},
		{typ: "deleted", doc: "farmers/wc/products/b", index: 1, auth: owner},
		{typ: "created", doc: "farmers/wc/products/c", index: 2, fields: map[string]string{"status": `{"stringValue":"on"}`}, auth: owner},
	} {
		d := expectProductEvent(h, q, w)
		ackTime, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(ack["commitTime"]))
		if at, err := time.Parse(time.RFC3339Nano, d.ce.Time); err != nil || !at.Equal(ackTime) {
			t.Errorf("event %d: time %s, want the acknowledged commitTime %v", i, d.ce.Time, ack["commitTime"])
		}
		fromChannel = append(fromChannel, d)
	}
	// events.old_value read the documents with the channel's credentials.
	if old := fromChannel[0].ce.Data.OldValue; old == nil || string(old.Fields["status"]) != `{"stringValue":"off"}` {
		t.Errorf("updated event's oldValue %v, want status off: %v", old, fromChannel[0])
	}

	// The same writes as a REST commit, on another farmer's products.
	seed("rest")
	body := `{"writes":[` + strings.Join(channelWrites(h, "rest"), ",") + `]}`
	if a := h.via(0, "POST", h.docs()+":commit", body); a.status != http.StatusOK {
		t.Fatalf("REST commit: %v", a)
	}
	for i, w := range []want{
		{typ: "updated", doc: "farmers/rest/products/a", index: 0, auth: owner},
		{typ: "deleted", doc: "farmers/rest/products/b", index: 1, auth: owner},
		{typ: "created", doc: "farmers/rest/products/c", index: 2, auth: owner},
	} {
		d := expectProductEvent(h, q, w)
		if d.routingKey != fromChannel[i].routingKey || d.ce.Type != fromChannel[i].ce.Type ||
			d.ce.AuthHash != fromChannel[i].ce.AuthHash ||
			strings.Replace(d.ce.Subject, "/rest/", "/wc/", 1) != fromChannel[i].ce.Subject {
			t.Errorf("write %d: the REST commit's event %v differs from the channel's %v", i, d, fromChannel[i])
		}
	}
	if got := counterSum(t, h.replicas[0], "harvest_proxy_webchannel_unexpected_total"); got != 0 {
		t.Errorf("%v Write-channel frames counted as unexpected in plain SDK traffic", got)
	}
}

// With the event outbox full (broker cut), a write on the Write channel is refused like
// a REST write: its POST gets a Firestore-shaped 503 before anything is forwarded, and
// the data is unchanged. WebChannel takes the failed POST for a network error, so the
// SDK sends the write again later: it is never acknowledged without its events.
func TestWriteChannelRefusesWritesWhenTheOutboxIsFull(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	relay.Cut()
	h := newHarness(t, eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/", "outbox_max_bytes: 2000"))
	c := openChannel(t, h.replicas[0].url, h.project, owner)
	filled := false
	for i := 0; i < 50 && !filled; i++ {
		a := h.via(0, "PATCH", fmt.Sprintf("%s/products/p%d", h.docs(), i), `{"fields":{"n":{"integerValue":"1"}}}`)
		switch a.status {
		case 200:
		case 503:
			filled = true
		default:
			t.Fatalf("write %d: %v", i, a)
		}
	}
	if !filled {
		t.Fatal("50 writes with the broker cut never filled a 2000-byte outbox")
	}
	before := h.meter.Snapshot().Total
	status, body := c.writeOnce(fmt.Sprintf(`{"update":{"name":%q,"fields":{}}}`, h.name("products/x")))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("Write-channel write with the outbox full: %d %s, want 503", status, body)
	}
	var e struct {
		Error struct {
			Code   int    `json:"code"`
			Status string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code != 503 || e.Error.Status != "UNAVAILABLE" {
		t.Errorf("refusal %s, want a Firestore-shaped 503 UNAVAILABLE", body)
	}
	if after := h.meter.Snapshot().Total; after != before {
		t.Fatalf("the upstream saw %d requests of the refused write", after-before)
	}
	if a := h.direct("GET", h.docs()+"/products/x", ""); a.status != 404 {
		t.Errorf("the refused write landed: %v", a)
	}
}

// expectProductEvent is harness.expect for a document of a products subcollection
// (routing key products.<type>).
func expectProductEvent(h *harness, q *eventQueue, w want) delivery {
	h.t.Helper()
	t := h.t
	d := q.next(w.typ + " " + w.doc)
	if d.ce.Type != "google.cloud.firestore.document.v1."+w.typ || d.ce.Subject != "documents/"+w.doc ||
		d.routingKey != "products."+w.typ {
		t.Fatalf("want a %s event of %s (routing key products.%s), got %v", w.typ, w.doc, w.typ, d)
	}
	at, err := time.Parse(time.RFC3339Nano, d.ce.Time)
	if err != nil {
		t.Fatalf("%s: time %q: %v", w.doc, d.ce.Time, err)
	}
	id := event.ID(h.name(w.doc), at) // the version's update time is the commit time here
	if w.typ == "deleted" {
		var version time.Time // the deleted version, known with events.old_value
		if d.ce.Data.OldValue != nil {
			version = d.ce.Data.OldValue.UpdateTime
		}
		id = event.DeleteID(h.name(w.doc), version, at)
	}
	if d.ce.ID != id || d.messageID != id {
		t.Errorf("%s: id %q (message_id %q), want the deterministic %q", w.doc, d.ce.ID, d.messageID, id)
	}
	for f, v := range w.fields {
		if got := d.field(f); got != v {
			t.Errorf("%s %s: data.value.fields.%s = %s, want %s", w.typ, w.doc, f, got, v)
		}
	}
	if got, wantHash := d.ce.AuthHash, identityHash([]byte(w.auth)); got != wantHash {
		t.Errorf("%s: authhash %q, want %q (hash of %q)", w.doc, got, wantHash, w.auth)
	}
	return d
}

// fakeChannelUpstream answers the Write channel with scripted backchannel bytes: the
// opening answer, then first (flushed), then, once release is closed, second.
// The forward POST bodies it received go to posts.
func fakeChannelUpstream(t *testing.T, first, second string, release <-chan struct{}, posts chan<- string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			select {
			case posts <- string(b):
			default:
			}
		}
		switch {
		case r.Method == "POST" && r.URL.Query().Get("SID") == "":
			io.WriteString(w, "52\n[[0,[\"c\",\"0Mp-Ig5o3hetKwlU1By95Q==\",\"\",8,12,30000]]]")
		case r.Method == "GET" && r.URL.Query().Get("RID") == "rpc":
			io.WriteString(w, first)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, second)
		default:
			io.WriteString(w, "7\n[1,2,7]")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// frame is a chunk with its length prefix (UTF-16 code units, as WebChannel counts).
func frame(s string) string {
	return fmt.Sprintf("%d\n%s", len([]rune(s))+strings.Count(s, "😀"), s)
}

// Frames the proxy does not understand reach the client byte for byte and are counted:
// an unknown control array, a data message that is no WriteResponse, a chunk torn across
// the upstream's writes, and bytes that are not a chunk at all. The backchannel is not
// buffered: the client has the first chunks while the upstream still holds the rest.
func TestWriteChannelForwardsUnknownAndTornFramesUntouched(t *testing.T) {
	torn := frame(`[[4,[{"unknownField":"é😀"}]]]`)
	first := frame(`[[1,[{"streamId":"0","streamToken":"MA=="}]]]`) + frame(`[[2,["noop"]]]`) +
		frame(`[[3,["x-newer-control",1]]]`) + torn[:len(torn)/2]
	second := torn[len(torn)/2:] + "<html>not a frame</html>"
	release := make(chan struct{})
	posts := make(chan string, 8)
	upstream := fakeChannelUpstream(t, first, second, release, posts)
	h := newHarness(t, setup{upstream: func(int, string) string { return upstream }})

	c := &channelClient{
		t: t, base: h.replicas[0].url, database: "projects/" + h.project + "/databases/(default)",
		http: &http.Client{Transport: &http.Transport{DisableCompression: true}}, rid: 1000,
		entries: make(chan webchannel.Entry, 64), done: make(chan struct{}), once: true,
	}
	c.post(c.url("RID=1000&CVER=22"), c.forms(`{"database":"`+c.database+`"}`))
	c.sid = "0Mp-Ig5o3hetKwlU1By95Q=="
	c.backchannel()
	var ids []int64
	for len(ids) < 3 {
		select {
		case e := <-c.entries:
			ids = append(ids, e.ArrayID)
		case <-time.After(30 * time.Second):
			t.Fatalf("the client never got the complete chunks while the upstream held the rest: buffered? got arrays %v", ids)
		}
	}
	close(release)
	<-c.done
	c.mu.Lock()
	got := string(c.raw)
	c.mu.Unlock()
	if want := first + second; got != want {
		t.Fatalf("the backchannel changed on its way:\n got  %q\n want %q", got, want)
	}
	if !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Errorf("arrays %v, want 1 2 3 in order", ids)
	}
	<-posts // the opening POST
	// A forward body that is not the wire reaches the upstream as it was sent.
	odd := "count=1&ofs=1&req0___data__=%7B%7D&req9___data__=%5B%5D&extra=%E2%9C%93"
	if got := string(c.post(c.url("SID="+url.QueryEscape(c.sid)+"&RID=1001&AID=3"), odd)); got != "7\n[1,2,7]" {
		t.Errorf("the answer to an unreadable forward POST: %q", got)
	}
	if got := <-posts; got != odd {
		t.Errorf("the upstream got %q, want the body untouched %q", got, odd)
	}
	for reason, want := range map[string]float64{unexpectedUnpaired: 1, unexpectedControl: 1, unexpectedFraming: 1, unexpectedForward: 1} {
		if got := reasonCount(t, h.replicas[0], "harvest_proxy_webchannel_unexpected_total", reason); got != want {
			t.Errorf("unexpected{reason=%s} = %v, want %v", reason, got, want)
		}
	}
}

func reasonCount(t *testing.T, r *replica, name, reason string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return metricValue(m)
				}
			}
		}
	}
	return 0
}
