package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"

	"github.com/valyala/fasthttp"
)

// One place decides who the caller is: the identity that keys scope-user cache entries
// and becomes the events' authhash. It is a hash of exactly the credentials the upstream
// will use, never a claim inside them (which the proxy cannot verify), and a request
// whose credentials the upstream could read differently from the proxy is refused.
//
// Credentials are what Google's API front end (and the emulator) authenticate or
// authorise with (cloud.google.com/apis/docs/system-parameters):
//
//   - the bearer credential: the Authorization header (gRPC: authorization metadata),
//     or the access_token query parameter instead of it;
//   - the API key: the X-Goog-Api-Key header or the key query parameter;
//   - X-Firebase-AppCheck, X-Goog-Iam-Authorization-Token, X-Goog-Iam-Authority-Selector
//     and Cookie headers.
//
// Ambiguous, refused with 400 INVALID_ARGUMENT before anything is cached or forwarded:
// a credential given twice (two Authorization headers, even an empty one: the proxy
// would see one and the upstream use the other), two bearer credentials (an
// Authorization header and access_token), two different API keys (X-Goog-Api-Key and
// key). The same API key as both X-Goog-Api-Key and key is one key: the Firebase
// SDKs send it so.
// access_token alone is one bearer credential like any other.

// credential is one credential-bearing value as the upstream receives it. name is its
// lower-case wire name (a header, gRPC metadata key, or "?" + a query parameter).
type credential struct {
	name  string
	value []byte
}

// errAmbiguousCredentials is the refusal of a request whose credentials the proxy and
// the upstream could read differently. Its text names no value.
var errAmbiguousCredentials = errors.New("ambiguous credentials: send each of Authorization, access_token, X-Goog-Api-Key/key, X-Firebase-AppCheck, X-Goog-Iam-* and Cookie at most once, and Authorization or access_token, not both")

// Credential names, lower case.
const (
	credAuthorization = "authorization"
	credAccessToken   = "?access_token"
	credKey           = "?key"
	credAPIKey        = "x-goog-api-key"
)

// credentialHeaders are the request headers that carry credentials, lower case.
var credentialHeaders = [...]string{
	credAuthorization,
	credAPIKey,
	"x-firebase-appcheck",
	"x-goog-iam-authorization-token",
	"x-goog-iam-authority-selector",
	"cookie",
}

// credentialParams are the query parameters that carry credentials (decoded names).
var credentialParams = [...]string{"access_token", "$access_token", "key", "$key"}

// identityOf is the identity of a request that carries exactly creds (any order), for
// every front: "" for none (the anonymous identity), else a 128-bit hex hash. A lone
// Authorization credential hashes to sha256 of its value, so REST and gRPC callers
// with the same header share an identity. It refuses ambiguous credentials.
func identityOf(in []credential) (string, error) {
	// An API key is one credential wherever it is sent: the Firebase SDKs send the
	// same key as ?key= and as X-Goog-Api-Key. Both go by one name, so a key hashes
	// alike from every front (REST, gRPC, the WebChannel's headers); the same key
	// twice is one key, two different keys are ambiguous.
	var buf [len(credentialHeaders) + len(credentialParams)]credential
	creds := buf[:0]
	bearers := 0
	for _, c := range in {
		if c.name == credKey {
			c.name = credAPIKey
		}
		repeated := false
		for _, d := range creds {
			if d.name != c.name {
				continue
			}
			if c.name != credAPIKey || !bytes.Equal(d.value, c.value) {
				return "", errAmbiguousCredentials
			}
			repeated = true
		}
		if repeated {
			continue
		}
		if len(creds) == cap(creds) {
			return "", errAmbiguousCredentials // more than every name once: a duplicate
		}
		if c.name == credAuthorization || c.name == credAccessToken {
			bearers++
		}
		creds = append(creds, c)
	}
	if bearers > 1 {
		return "", errAmbiguousCredentials
	}
	switch {
	case len(creds) == 0:
		return "", nil
	case len(creds) == 1 && creds[0].name == credAuthorization:
		if len(creds[0].value) == 0 {
			return "", nil // an empty header authenticates nobody: anonymous
		}
		sum := sha256.Sum256(creds[0].value)
		return hex.EncodeToString(sum[:16]), nil
	}
	// Several: length-prefixed name/value pairs in name order.
	var order [len(credentialHeaders) + len(credentialParams)]int
	n := 0
	for i := range creds {
		j := n
		for j > 0 && creds[order[j-1]].name > creds[i].name {
			order[j] = order[j-1]
			j--
		}
		order[j] = i
		n++
	}
	h := sha256.New()
	var lenBuf [binary.MaxVarintLen64]byte
	for _, i := range order[:n] {
		c := creds[i]
		h.Write(binary.AppendUvarint(lenBuf[:0], uint64(len(c.name))))
		h.Write([]byte(c.name))
		h.Write(binary.AppendUvarint(lenBuf[:0], uint64(len(c.value))))
		h.Write(c.value)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// identityHash is identityOf a lone Authorization header (or gRPC authorization
// metadata): the caller's identity when that is its only credential.
func identityHash(authorization []byte) string {
	id, _ := identityOf([]credential{{name: credAuthorization, value: authorization}})
	return id
}

// headerFacts is what one pass over a REST request's headers finds: its credential
// headers (values alias the request: valid while it is) and whether it asks the
// upstream to take another method than the request line's.
type headerFacts struct {
	creds    [8]credential
	n        int
	overflow bool // more credential headers than creds holds: certainly a duplicate
	override bool // X-HTTP-Method-Override (or a variant) is present
}

func (f *headerFacts) credentials() []credential { return f.creds[:f.n] }

// scanHeaders fills f from h in one pass. It is on the hit path: it allocates nothing.
func scanHeaders(h *fasthttp.RequestHeader, f *headerFacts) {
	for k, v := range h.All() {
		if name := credentialHeaderName(k); name != "" {
			if f.n == len(f.creds) {
				f.overflow = true
				continue
			}
			f.creds[f.n] = credential{name: name, value: v}
			f.n++
			continue
		}
		if isMethodOverride(k) {
			f.override = true
		}
	}
}

func credentialHeaderName(k []byte) string {
	for _, name := range credentialHeaders {
		if len(k) == len(name) && bytes.EqualFold(k, []byte(name)) {
			return name
		}
	}
	return ""
}

// isMethodOverride reports a header that makes Google's front end (and some
// frameworks) run another method than the request line's: a POST that is a PATCH or
// DELETE upstream would be a write the proxy never saw.
func isMethodOverride(k []byte) bool {
	switch len(k) {
	case len("X-HTTP-Method-Override"):
		return bytes.EqualFold(k, []byte("X-HTTP-Method-Override"))
	case len("X-HTTP-Method"):
		return bytes.EqualFold(k, []byte("X-HTTP-Method"))
	case len("X-Method-Override"):
		return bytes.EqualFold(k, []byte("X-Method-Override"))
	}
	return false
}

// requestIdentity is the identity of a REST request: identityOf its credential
// headers and credential query parameters. Handle refuses ambiguous requests before
// anything asks; should one reach here, every credential is hashed (never fewer).
func requestIdentity(ctx *fasthttp.RequestCtx) string {
	var f headerFacts
	scanHeaders(&ctx.Request.Header, &f)
	creds := appendQueryCredentials(f.credentials(), ctx.QueryArgs())
	id, err := identityOf(creds)
	if err != nil {
		h := sha256.New()
		for _, c := range creds {
			h.Write([]byte(c.name))
			h.Write([]byte{0})
			h.Write(c.value)
			h.Write([]byte{0})
		}
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	return id
}

// appendQueryCredentials appends the credential query parameters of args (decoded;
// "$key" and "key" are one name for the upstream, as are the $-forms of access_token).
func appendQueryCredentials(creds []credential, args *fasthttp.Args) []credential {
	for k, v := range args.All() {
		for _, name := range credentialParams {
			if string(k) != name {
				continue
			}
			wire := credKey
			if name == "access_token" || name == "$access_token" {
				wire = credAccessToken
			}
			creds = append(creds, credential{name: wire, value: v})
		}
	}
	return creds
}

// requestCredentialsOK reports whether a REST request's credentials are unambiguous,
// given the facts of its header pass.
func requestCredentialsOK(ctx *fasthttp.RequestCtx, f *headerFacts) bool {
	if f.overflow {
		return false
	}
	var buf [16]credential
	creds := append(buf[:0], f.credentials()...)
	_, err := identityOf(appendQueryCredentials(creds, ctx.QueryArgs()))
	return err == nil
}
