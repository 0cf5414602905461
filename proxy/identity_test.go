package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestIdentityOf(t *testing.T) {
	auth := func(v string) credential { return credential{name: credAuthorization, value: []byte(v)} }
	other := func(name, v string) credential { return credential{name: name, value: []byte(v)} }
	for _, tc := range []struct {
		name      string
		creds     []credential
		ambiguous bool
	}{
		{"none", nil, false},
		{"one Authorization", []credential{auth("Bearer a")}, false},
		{"access_token alone", []credential{other(credAccessToken, "a")}, false},
		{"Authorization and App Check", []credential{auth("Bearer a"), other("x-firebase-appcheck", "t")}, false},
		{"two Authorization", []credential{auth("Bearer a"), auth("Bearer b")}, true},
		{"an empty and a real Authorization", []credential{auth(""), auth("Bearer owner")}, true},
		{"Authorization and access_token", []credential{auth("Bearer a"), other(credAccessToken, "a")}, true},
		{"two access_token", []credential{other(credAccessToken, "a"), other(credAccessToken, "a")}, true},
		{"key and X-Goog-Api-Key, the same key (the Firebase SDKs)", []credential{other(credKey, "k"), other(credAPIKey, "k")}, false},
		{"key and X-Goog-Api-Key, two keys", []credential{other(credKey, "k"), other(credAPIKey, "j")}, true},
		{"Authorization, key and X-Goog-Api-Key, two keys", []credential{auth("Bearer a"), other(credAPIKey, "k"), other(credKey, "j")}, true},
		{"two App Check", []credential{other("x-firebase-appcheck", "t"), other("x-firebase-appcheck", "u")}, true},
	} {
		_, err := identityOf(tc.creds)
		if (err != nil) != tc.ambiguous {
			t.Errorf("%s: err = %v, want ambiguous=%v", tc.name, err, tc.ambiguous)
		}
	}
	// Distinct credentials, distinct identities; order does not matter; a lone
	// Authorization keeps the hash REST and gRPC share.
	a, _ := identityOf([]credential{auth("Bearer a")})
	if a != identityHash([]byte("Bearer a")) || a == "" {
		t.Errorf("lone Authorization: %q, identityHash %q", a, identityHash([]byte("Bearer a")))
	}
	withCheck, _ := identityOf([]credential{auth("Bearer a"), other("x-firebase-appcheck", "t")})
	reversed, _ := identityOf([]credential{other("x-firebase-appcheck", "t"), auth("Bearer a")})
	otherCheck, _ := identityOf([]credential{auth("Bearer a"), other("x-firebase-appcheck", "u")})
	token, _ := identityOf([]credential{other(credAccessToken, "Bearer a")})
	if withCheck == a || withCheck != reversed || withCheck == otherCheck || token == a || token == "" {
		t.Errorf("identities: a %q, a+check %q (reversed %q), a+other check %q, access_token %q", a, withCheck, reversed, otherCheck, token)
	}
	// An API key is one credential wherever it is sent: REST's ?key=, the header, both.
	inQuery, _ := identityOf([]credential{auth("Bearer a"), other(credKey, "k")})
	inHeader, _ := identityOf([]credential{auth("Bearer a"), other(credAPIKey, "k")})
	inBoth, _ := identityOf([]credential{other(credKey, "k"), auth("Bearer a"), other(credAPIKey, "k")})
	if inQuery != inHeader || inBoth != inHeader || inHeader == a {
		t.Errorf("one key, three places: query %q, header %q, both %q (without it %q)", inQuery, inHeader, inBoth, a)
	}
	if anon, _ := identityOf([]credential{auth("")}); anon != "" {
		t.Errorf("an empty Authorization is anonymous, got %q", anon)
	}
}

// The hit path's header pass allocates nothing.
func TestScanHeadersDoesNotAllocate(t *testing.T) {
	var req fasthttp.Request
	req.Header.Set("Authorization", "Bearer a")
	req.Header.Set("X-Firebase-AppCheck", "t")
	req.Header.Set("Content-Type", "application/json")
	if n := testing.AllocsPerRun(100, func() {
		var f headerFacts
		scanHeaders(&req.Header, &f)
		if f.n != 2 {
			t.Fatalf("found %d credentials", f.n)
		}
	}); n != 0 {
		t.Fatalf("scanHeaders allocated %v times", n)
	}
}

// rawHeaders sends a request whose headers may repeat (Go's client writes each value
// of a header on its own line).
func rawHeaders(t *testing.T, method, url, body string, hdr map[string][]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, header: resp.Header}
}

// The proxy keys scope user on exactly the credentials the upstream uses. A request
// it could read differently from the upstream (two Authorization headers, where the
// emulator takes the last: an empty first one would have stored the owner's private
// answer under the anonymous key) is refused with a Firestore-shaped 400 that names
// no credential, and reaches no upstream.
func TestAmbiguousCredentialsAreRefused(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /sessions/{s}
    ttl: 10m
`})
	h.put("sessions/s1", `{"v":{"stringValue":"secret"}}`)
	doc := h.replicas[0].url + h.docs() + "/sessions/s1"
	ids := h.replicas[0].url + h.docs() + ":listCollectionIds"
	for _, tc := range []struct {
		name, method, url string
		hdr               map[string][]string
	}{
		{"an empty and the owner's Authorization", "POST", ids, map[string][]string{"Authorization": {"", owner}}},
		{"two Authorization", "GET", doc, map[string][]string{"Authorization": {owner, "Bearer x"}}},
		{"Authorization and access_token", "GET", doc + "?access_token=owner", map[string][]string{"Authorization": {owner}}},
		{"two access_token", "GET", doc + "?access_token=a&access_token=b", nil},
		{"key and X-Goog-Api-Key", "GET", doc + "?key=k1", map[string][]string{"X-Goog-Api-Key": {"k2"}}},
		{"two App Check tokens", "GET", doc, map[string][]string{"Authorization": {owner}, "X-Firebase-Appcheck": {"t1", "t2"}}},
		{"a method override", "POST", doc, map[string][]string{"Authorization": {owner}, "X-Http-Method-Override": {"DELETE"}}},
	} {
		before, _ := h.counts()
		a := rawHeaders(t, tc.method, tc.url, "{}", tc.hdr)
		if a.status != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", tc.name, a)
			continue
		}
		if code, status := firestoreError(t, a); code != 400 || status != "INVALID_ARGUMENT" {
			t.Errorf("%s: error %d %s", tc.name, code, status)
		}
		if strings.Contains(string(a.body), "owner") || strings.Contains(string(a.body), "Bearer") {
			t.Errorf("%s: the error echoes a credential: %s", tc.name, a.body)
		}
		if after, _ := h.counts(); after != before {
			t.Errorf("%s: the refused request reached the upstream", tc.name)
		}
	}

	// One Authorization with different App Check tokens: two identities, two misses.
	for i, check := range []string{"t1", "t2"} {
		a := rawHeaders(t, "GET", doc, "", map[string][]string{"Authorization": {owner}, "X-Firebase-Appcheck": {check}})
		if a.status != 200 || a.header.Get("X-Cache") != "MISS" {
			t.Errorf("read %d with App Check %s: %v, want a MISS", i, check, a)
		}
	}
}
