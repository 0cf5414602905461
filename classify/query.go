package classify

import (
	"slices"
	"strings"

	"github.com/harvest-hub/edge/firestorepath"
)

// queryParam is one parameter of a query string, percent-decoded ('+' is a space).
// When the pair does not decode, bad is set and key holds the raw pair.
type queryParam struct {
	key, value string
	bad        bool
}

// parseQuery splits and decodes rawQuery, appending to dst. Empty pairs ("&&") are
// dropped; "k" and "k=" are the same parameter with an empty value, as for url.ParseQuery.
// Decoded strings may share memory with rawQuery (callers clone what they keep); all
// decoded text lives in one allocation, made only when something needs decoding.
func parseQuery(rawQuery string, dst []queryParam) []queryParam {
	var decoded strings.Builder
	if strings.ContainsAny(rawQuery, "%+") {
		decoded.Grow(len(rawQuery)) // decoding never lengthens: offsets stay valid
	}
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, okKey := unescapeQuery(&decoded, k)
		value, okValue := unescapeQuery(&decoded, v)
		if !okKey || !okValue {
			dst = append(dst, queryParam{key: pair, bad: true})
			continue
		}
		dst = append(dst, queryParam{key: key, value: value})
	}
	return dst
}

// unescapeQuery decodes s (%XX escapes, '+' as space), appending to b when s needs it.
func unescapeQuery(b *strings.Builder, s string) (string, bool) {
	if !strings.ContainsAny(s, "%+") {
		return s, true
	}
	start := b.Len()
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			b.WriteByte(' ')
		case '%':
			if i+2 >= len(s) {
				return "", false
			}
			d, ok := firestorepath.Unhex(s[i+1], s[i+2])
			if !ok {
				return "", false
			}
			b.WriteByte(d)
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()[start:], true
}

// transportNoise are parameters that never change response bytes: quota attribution and
// request tags for monitoring. Everything else, known or not, is part of the key, so an
// unfamiliar parameter can cost hits but never serve one caller another's answer.
func transportNoise(key string) bool {
	switch key {
	case "quotaUser", "$quotaUser", "userIp", "$userIp",
		"requestOptions.requestTags", "request_options.request_tags":
		return true
	}
	return false
}

// KeyParams returns the canonical form of the query parameters that shape a response, for
// the cache key. Precisely:
//
//   - every parameter of rawQuery except transport noise (quotaUser, userIp, their
//     $-forms, and requestOptions.requestTags), known or not: $alt, alt, key, fields,
//     $fields, mask.fieldPaths, pageSize, pageToken, orderBy, showMissing, documentId,
//     prettyPrint, callback, access_token, transaction, readTime...;
//   - keys and values percent-decoded ('+' is a space), so "%24alt=json%3Benum-encoding%3Dint"
//     and "$alt=json;enum-encoding=int" are the same parameter; "$alt" and "alt" stay
//     distinct, as do a snake_case key and its camelCase twin;
//   - sorted by key, stably: the values of a repeated key keep their request order;
//   - written as key=value pairs joined by '&', each key and value escaped so that only
//     A-Z a-z 0-9 - . _ ~ appear unescaped (so '&', '=' and '!' never appear inside one);
//   - a pair that does not percent-decode is kept verbatim as "!" + its escaped raw
//     text, after the decoded pairs, in request order;
//   - nil when nothing is left. Empty pairs ("a=1&&b=2") are ignored, and "k" equals "k=".
//
// The result never shares memory with rawQuery.
func KeyParams(rawQuery string) []byte {
	var buf [16]queryParam
	params := parseQuery(rawQuery, buf[:0])
	if len(params) == 0 {
		return nil
	}
	return appendKeyParams(make([]byte, 0, len(rawQuery)+16), params)
}

// appendKeyParams appends the canonical encoding of params to dst (see KeyParams). It
// reorders params.
func appendKeyParams(dst []byte, params []queryParam) []byte {
	slices.SortStableFunc(params, func(a, b queryParam) int {
		if a.bad != b.bad {
			if a.bad {
				return 1
			}
			return -1
		}
		if a.bad {
			return 0 // raw pairs keep request order
		}
		return strings.Compare(a.key, b.key)
	})
	first := true
	for _, p := range params {
		if !p.bad && transportNoise(p.key) {
			continue
		}
		if !first {
			dst = append(dst, '&')
		}
		first = false
		if p.bad {
			dst = append(dst, '!')
			dst = appendEscaped(dst, p.key)
			continue
		}
		dst = appendEscaped(dst, p.key)
		dst = append(dst, '=')
		dst = appendEscaped(dst, p.value)
	}
	return dst
}

// appendEscaped percent-encodes every byte but the RFC 3986 unreserved characters.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&15])
	}
	return dst
}

// camelKey turns a snake_case query key into the JSON (lowerCamel) name Google's REST
// transcoding also accepts, component by component: "current_document.exists" →
// "currentDocument.exists". Keys without '_' are returned as they are.
func camelKey(key string) string {
	if strings.IndexByte(key, '_') < 0 {
		return key
	}
	var b strings.Builder
	b.Grow(len(key))
	upper := false
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '_':
			upper = true
			continue
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		upper = false
		b.WriteByte(c)
	}
	return b.String()
}

// queryFacts are the parameters that change what a request means, as opposed to
// how its answer is encoded.
type queryFacts struct {
	undecodable   bool // some pair did not decode
	transactional bool // transaction, newTransaction.* or readTime present
	showMissing   bool // showMissing with any value but "false"
	// values of the write parameters, in request order (cloned: safe to keep)
	documentID    []string
	updateMask    []string
	hasUpdateMask bool
	exists        []string
	updateTime    []string
}

func readFacts(params []queryParam) queryFacts {
	var f queryFacts
	for _, p := range params {
		if p.bad {
			f.undecodable = true
			continue
		}
		switch key := camelKey(p.key); {
		case key == "transaction" || key == "readTime" || key == "newTransaction" ||
			strings.HasPrefix(key, "newTransaction.") || strings.HasPrefix(key, "readTime."):
			f.transactional = true
		case key == "showMissing":
			if !strings.EqualFold(p.value, "false") {
				f.showMissing = true
			}
		case key == "documentId":
			f.documentID = append(f.documentID, strings.Clone(p.value))
		case key == "updateMask.fieldPaths":
			f.hasUpdateMask = true
			f.updateMask = append(f.updateMask, strings.Clone(p.value))
		case key == "currentDocument.exists":
			f.exists = append(f.exists, p.value)
		case key == "currentDocument.updateTime":
			f.updateTime = append(f.updateTime, p.value)
		}
	}
	return f
}
