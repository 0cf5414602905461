// Package nginx holds harvest-proxy's production nginx configuration (nginx.conf,
// snippets/, templates/, defaults.env; README.md explains them) and renders it the way
// the official nginx image does at start: templates/NAME.conf.template becomes
// conf.d/NAME.conf with every ${NGINX_...} placeholder replaced.
//
// Promises:
//   - Render produces a directory nginx can load with `nginx -c DIR/nginx.conf`: the
//     static files copied as they are, the templates rendered with envsubst's rules
//     ($NAME and ${NAME} of the given variables are replaced, everything else,
//     nginx's own $variables included, is left alone).
//   - A placeholder without a value is an error naming the file and the variable,
//     never an unrendered "${...}" left for nginx to misread as one of its variables.
//   - render.sh does the same with envsubst, byte for byte (a test compares them).
//   - Defaults reads defaults.env, the documented list of placeholders with their
//     default values; Render refuses a variable that list does not name.
//
// The tests run the real nginx binary (Debian's nginx 1.22; deploy/dev-services.sh
// installs it) on loopback ports, in front of an in-process harvest-proxy in front of
// the Firestore emulator, and check what users rely on: caching headers passed
// through, gzip, security headers, rate limits with Firestore-shaped errors, TLS with
// HTTP/2, redirects, CORS, health checks and static asset caching.
package nginx
