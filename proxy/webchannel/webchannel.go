// Package webchannel speaks Google's WebChannel protocol (version 8), which the
// Firebase web SDK (firebase/firestore, not /lite) speaks on the Firestore Listen and
// Write channels, POST and GET /google.firestore.v1.Firestore/{Listen,Write}/channel:
// the client side's framing, which the proxy uses to read the upstream's Write
// channel (ParseForward, Splitter, ParseChunk), and a server (Server, Session), which
// serves the Listen channel itself. No Go library speaks WebChannel (its only
// implementations are closure-library's client and Google's servers), so both are
// written by hand, from closure-library's WebChannelBase and ChannelRequest, the
// Firebase JS SDK's webchannel_connection.ts, and traffic of firebase 12.19.0 with the
// Firestore emulator.
//
// The wire, as this package reads it:
//
//   - A session opens with a forward-channel POST without SID (RID=<random>, CVER=22,
//     VER=8, database=projects/p/databases/d on every request). Its form-encoded body
//     carries "headers" (the client's HTTP headers, "Name:value" CRLF lines: Firestore's
//     SDK sends Authorization this way, encodeInitMessageHeaders, to avoid a CORS
//     preflight), then "count", "ofs" and the messages. Its answer is a backchannel-style
//     chunk holding [[0,["c",SID,hostPrefix,8,...]]].
//   - Later forward-channel POSTs carry SID, RID (a counter) and AID (the last array id
//     the client received); the body is "count=N&ofs=K&req0___data__=...&req1___data__=...":
//     message i has map id K+i, and with sendRawJson (the SDK's choice) its only field
//     __data__ is the message as JSON text (a WriteRequest or ListenRequest). A POST
//     that failed is sent again with the same map ids. Its answer is [1,lastArrayId,
//     outstandingBytes]-style status, framed like a backchannel chunk.
//   - The backchannel is a GET with RID=rpc, SID, AID, TYPE=xmlhttp and CI=0
//     (streaming: the answer stays open, chunk after chunk) or CI=1 (long-poll: one
//     answer per GET). Its body is a sequence of chunks: a decimal length, "\n", then
//     that many UTF-16 code units (JavaScript string length, not bytes) of JSON: an
//     array of [arrayId, payload] entries. A payload is [message] for data, or a control
//     array: ["noop"], ["stop"], ["close"], ["c",...]. An error arrives as a data
//     message {"error":{...}} (or, from an older server bug, [{"error":{...}}]). A
//     backchannel reopened with AID=n gets the arrays after n again.
//   - TYPE=terminate (a GET with SID from an image, or a POST from sendBeacon) ends
//     the session.
//   - A request of a session the server does not know is answered 400 with "Unknown
//     SID" in its text: closure fails the channel, and the SDK opens a new one.
//
// The server also takes headers in a $httpHeaders URL parameter (closure's
// httpHeadersOverwriteParam; the SDK uses the "headers" body field instead). It
// refuses fastHandshake (the opening messages in a $req URL parameter of a GET),
// which the SDK does not use.
//
// Promises of the reader: ParseForward, ParseChunk and ParseRequest never panic and
// reject what is not the wire above with an error; a Splitter hands back every byte
// it was fed, in order, exactly once, either inside a complete chunk or, once the
// framing is broken, as passthrough, so a caller that forwards the segments forwards
// the stream untouched.
//
// Promises of the server (Server, Session):
//
//   - Session ids are 128 bits from crypto/rand. A session lives in the Server that
//     opened it; any request naming another is answered "Unknown SID".
//   - Recv returns each forward message once, in map-id order, however often the
//     client sends a POST again; a POST that skips map ids is refused.
//   - Every array Send queues reaches the client in order, each once: it is written
//     to the backchannel (streaming, or the next long poll), and written again to the
//     next backchannel until the client acknowledges it (AID), so a backchannel lost
//     mid-answer loses nothing.
//   - Bounded: sessions (Config.MaxSessions), bytes not acknowledged per session
//     (Send waits), forward bytes not yet taken per session (the POST waits).
//   - A client that vanishes without terminating is forgotten after
//     Config.SessionIdle without a backchannel or a forward request: its session
//     ends, its context is canceled, nothing of it stays (no goroutine, no timer).
//   - A backchannel silent for Config.NoopInterval gets ["noop"]; Shutdown sends
//     ["stop"] on every backchannel and ends it, Close sends ["close"].
//   - Errors describe the request's shape (Firestore-shaped JSON, package apierror)
//     and never quote it.
package webchannel
