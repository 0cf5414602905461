package proxy

import (
	"crypto/sha256"
	"encoding/hex"
)

// identityHash is the caller's identity as the proxy records it: a hash of the whole
// Authorization header (never a claim inside it, which the proxy cannot verify). It keys
// scope-user cache entries and is the only form of the caller that leaves the proxy, as
// the events' authhash attribute. An absent header is the anonymous identity "".
func identityHash(authorization []byte) string {
	if len(authorization) == 0 {
		return ""
	}
	sum := sha256.Sum256(authorization)
	return hex.EncodeToString(sum[:16])
}
