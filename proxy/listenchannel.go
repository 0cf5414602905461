package proxy

// The WebChannel front of Listen: the Firebase web SDK's Listen channel
// (/google.firestore.v1.Firestore/Listen/channel) is served by the proxy itself, not
// passed through. Package webchannel speaks the protocol (sessions, forward POSTs,
// backchannels); here each session becomes a fanout.Stream and is handed, with its
// Caller, to the proxy's Listen handler (listenHandler: the relay of listenrelay.go
// today, the fan-out hub later), exactly as the gRPC front hands its Listen calls.
//
//   - Messages: each forward message's __data__ is a ListenRequest in protojson (the
//     SDK's JSON: lowerCamel names, enums by name); each ListenResponse is sent as
//     protojson, one backchannel array [id,[response]], as Firestore sends them.
//   - The caller: Database is the opening request's database parameter (every
//     channel request carries it); Metadata is what the session carries for the
//     upstream: the headers of the opening POST's "headers" field (and $httpHeaders),
//     where the SDK puts Authorization and x-goog-api-key, and the credentials of the
//     opening request itself (headers, key and access_token parameters), as
//     lower-case gRPC metadata without the hop's headers (grpcrelay.Outgoing);
//     Identity is channelIdentity's hash of exactly those credentials. A session whose
//     credentials are ambiguous, or whose database is not projects/{p}/databases/{d},
//     is refused with a Firestore-shaped 400 before it opens.
//   - Ending: the handler's error (a gRPC status) reaches the SDK as Firestore sends a
//     stream error, {"error":{"code":<HTTP>,"message":...,"status":"<CODE>"}}, upon
//     which the SDK closes the channel and reconnects with backoff (or reports the
//     error, for PERMISSION_DENIED and the like); then the session is closed. A nil
//     return closes it quietly (["close"]).
//
// Limits: sessions live in the replica that opened them; behind several replicas a
// channel's requests need affinity by SID (gsessionid), as for the Write channel. A
// request of a session this replica does not know is answered 400 "Unknown SID", and
// the SDK opens a new channel, re-listening with its resume tokens.

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/firestorepath"
	"github.com/harvest-hub/edge/proxy/apierror"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
	"github.com/harvest-hub/edge/proxy/webchannel"
)

// listenChannelPath is where the Firebase web SDK opens its Listen channel.
const listenChannelPath = "/google.firestore.v1.Firestore/Listen/channel"

// isListenChannel reports whether the request is on the Listen channel (the decoded
// path, as isWriteChannel).
func isListenChannel(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.Path()) == listenChannelPath
}

// ListenChannelOptions tune the Listen channel's WebChannel server (package
// webchannel). Zero fields take the defaults.
type ListenChannelOptions struct {
	// NoopInterval: a backchannel without data for this long gets ["noop"]; the
	// client gives up on one silent for 1.5 times it. Default 30 s.
	NoopInterval time.Duration
	// SessionIdle ends a session with no backchannel and no forward request for this
	// long (a client that vanished), and with it its Listen stream. Default 60 s.
	SessionIdle time.Duration
	// MaxSessions bounds the Listen channel sessions of this replica; beyond it an
	// opening POST is answered 503 and the SDK retries with backoff. Default 10000.
	MaxSessions int
}

// listenChannels is the Listen channel's server and its metrics.
type listenChannels struct {
	srv      *webchannel.Server
	messages *prometheus.CounterVec // by direction: in (client to proxy), out
	in, out  prometheus.Counter
}

func newListenChannels(p *Proxy, o ListenChannelOptions, reg *prometheus.Registry) *listenChannels {
	lc := &listenChannels{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_proxy_listen_channel_messages_total",
			Help: "Listen messages on WebChannel Listen sessions, by direction: in (ListenRequests from browsers), out (ListenResponses to them).",
		}, []string{"direction"}),
	}
	lc.in, lc.out = lc.messages.WithLabelValues("in"), lc.messages.WithLabelValues("out")
	lc.srv = webchannel.NewServer(webchannel.Config{
		NoopInterval: o.NoopInterval,
		SessionIdle:  o.SessionIdle,
		MaxSessions:  o.MaxSessions,
		WriteTimeout: p.rules.Current().Server.WriteTimeout,
		Open:         p.openListenSession,
	})
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_proxy_listen_channel_sessions",
		Help: "WebChannel Listen sessions open on this replica.",
	}, func() float64 { return float64(lc.srv.Len()) })
	if reg != nil {
		reg.MustRegister(lc.messages, sessions)
	}
	return lc
}

// listenChannel serves one request of the Listen channel.
func (p *Proxy) listenChannel(ctx *fasthttp.RequestCtx) {
	p.m.requestOp(classify.Listen, resultBypass) // not cacheable, as before
	p.lch.srv.Handle(ctx)
}

// openListenSession accepts a new Listen session and starts serving it with
// p.listenHandler, or refuses it (answered in req).
func (p *Proxy) openListenSession(s *webchannel.Session, req *fasthttp.RequestCtx) error {
	caller, err := listenCaller(req, s)
	if err != nil {
		apierror.Write(req, fasthttp.StatusBadRequest, apierror.InvalidArgument, err.Error())
		return err
	}
	go func() {
		err := p.serveListen(&channelListenStream{s: s, lc: p.lch}, caller)
		if err != nil && s.Context().Err() == nil {
			st := status.Convert(err)
			code, name := apierror.FromGRPC(st.Code())
			s.Send(apierror.Marshal(code, name, st.Message()))
		}
		s.Close(err)
	}()
	return nil
}

// errListenDatabase refuses a session without a database parameter the upstream can
// route by. It names no value.
var errListenDatabase = errors.New("the Listen channel's database parameter is not projects/{project}/databases/{database}")

// listenCaller is who opened the session s with the opening request req.
func listenCaller(req *fasthttp.RequestCtx, s *webchannel.Session) (fanout.Caller, error) {
	db := s.Params().Get("database")
	if p, err := firestorepath.ParseName(db + "/documents"); err != nil || p.Database() != db || len(s.Params()["database"]) != 1 {
		return fanout.Caller{}, errListenDatabase
	}
	identity, _, err := channelIdentity(req, s.Headers())
	if err != nil {
		return fanout.Caller{}, err
	}
	md := metadata.MD{}
	for name, vs := range s.Headers() {
		md[strings.ToLower(name)] = append([]string(nil), vs...)
	}
	var f headerFacts
	scanHeaders(&req.Request.Header, &f)
	for _, c := range appendQueryCredentials(f.credentials(), req.QueryArgs()) {
		name, value := c.name, string(c.value)
		switch name {
		case credKey:
			name = credAPIKey
		case credAccessToken:
			name, value = credAuthorization, "Bearer "+value
		}
		if !containsValue(md[name], value) { // the API key may come both ways: one key
			md[name] = append(md[name], value)
		}
	}
	return fanout.Caller{Database: db, Metadata: grpcrelay.Outgoing(md), Identity: identity}, nil
}

func containsValue(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// channelListenStream is a Listen session as a fanout.Stream.
type channelListenStream struct {
	s  *webchannel.Session
	lc *listenChannels
}

var _ fanout.Stream = (*channelListenStream)(nil)

func (c *channelListenStream) Context() context.Context { return c.s.Context() }

// Recv returns the client's next ListenRequest: io.EOF once it terminated the
// channel, CANCELLED once the session ended otherwise, INVALID_ARGUMENT for a
// message that is not a ListenRequest.
func (c *channelListenStream) Recv() (*firestorepb.ListenRequest, error) {
	data, err := c.s.Recv()
	if err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, status.Error(codes.Canceled, err.Error())
	}
	req := &firestorepb.ListenRequest{}
	if err := protojson.Unmarshal(data, req); err != nil {
		return nil, status.Error(codes.InvalidArgument, "a Listen channel message is not a ListenRequest")
	}
	c.lc.in.Inc()
	return req, nil
}

// Send sends resp to the client as Firestore does: its protojson, one array.
func (c *channelListenStream) Send(resp *firestorepb.ListenResponse) error {
	b, err := protojson.Marshal(resp)
	if err != nil {
		return status.Error(codes.Internal, "a ListenResponse could not be encoded")
	}
	if err := c.s.Send(b); err != nil {
		return status.Error(codes.Canceled, err.Error())
	}
	c.lc.out.Inc()
	return nil
}
