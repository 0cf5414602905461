package watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"golang.org/x/oauth2/google"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/oauth"
)

// DatastoreScope is the OAuth scope Firestore accepts.
const DatastoreScope = "https://www.googleapis.com/auth/datastore"

// EmulatorToken is the bearer token the Firestore emulator treats as an administrator:
// it bypasses security rules, as the proxy's own reads must.
const EmulatorToken = "owner"

// DialOptions say how to reach the upstream's gRPC API with the proxy's own
// credentials (never a client's).
type DialOptions struct {
	// URL is the upstream, as the proxy's -upstream flag gives it:
	// "http://host:port" is the emulator (HTTP/2 cleartext, its REST port also serves
	// gRPC); "https://host[:port]" is production (TLS, port 443 by default).
	URL string
	// TokenFile holds a bearer token, read again for every call so that a rotated
	// token is picked up. Empty: "owner" on http, Application Default Credentials on
	// https.
	TokenFile string
}

// Dial opens a gRPC connection to the upstream. It does not wait for the connection:
// the first RPC does, and a Watch retries with backoff.
func Dial(ctx context.Context, o DialOptions) (*grpc.ClientConn, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" {
		return nil, errors.New("watch: upstream URL must be http://host:port or https://host[:port]")
	}
	var opts []grpc.DialOption
	host := u.Host
	switch u.Scheme {
	case "http":
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if o.TokenFile == "" {
			opts = append(opts, grpc.WithPerRPCCredentials(proxyCredentials{staticToken{token: EmulatorToken}}))
		}
	case "https":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})))
		if o.TokenFile == "" {
			ts, err := google.DefaultTokenSource(ctx, DatastoreScope)
			if err != nil {
				return nil, fmt.Errorf("watch: application default credentials: %w", err)
			}
			opts = append(opts, grpc.WithPerRPCCredentials(proxyCredentials{oauth.TokenSource{TokenSource: ts}}))
		}
	default:
		return nil, errors.New("watch: upstream URL scheme must be http or https")
	}
	if o.TokenFile != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(proxyCredentials{fileToken{path: o.TokenFile, secure: u.Scheme == "https"}}))
	}
	conn, err := grpc.NewClient("passthrough:///"+host, opts...)
	if err != nil {
		return nil, fmt.Errorf("watch: dial upstream: %w", err)
	}
	return conn, nil
}

// callerCredentialsKey marks a call's context: the call carries a client's own
// credentials in its outgoing metadata, and the proxy's must stay out of it.
type callerCredentialsKey struct{}

// WithCallerCredentials marks ctx so that calls made with it on a connection from Dial
// present only the credentials in ctx's outgoing metadata (a client's, for targets
// listened on its behalf), never the proxy's own: gRPC would otherwise send both
// authorization headers.
func WithCallerCredentials(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerCredentialsKey{}, true)
}

// proxyCredentials are the proxy's own per-call credentials, withheld from calls marked
// WithCallerCredentials.
type proxyCredentials struct{ credentials.PerRPCCredentials }

func (p proxyCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	if ctx.Value(callerCredentialsKey{}) != nil {
		return nil, nil
	}
	return p.PerRPCCredentials.GetRequestMetadata(ctx, uri...)
}

// staticToken sends one bearer token (the emulator's "owner") on cleartext connections.
type staticToken struct{ token string }

func (s staticToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + s.token}, nil
}
func (staticToken) RequireTransportSecurity() bool { return false }

// fileToken reads a bearer token from a file for every call.
type fileToken struct {
	path   string
	secure bool
}

func (f fileToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("watch: read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, errors.New("watch: token file is empty")
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}
func (f fileToken) RequireTransportSecurity() bool { return f.secure }

// compile-time checks
var (
	_ credentials.PerRPCCredentials = staticToken{}
	_ credentials.PerRPCCredentials = fileToken{}
	_ credentials.PerRPCCredentials = proxyCredentials{}
)
