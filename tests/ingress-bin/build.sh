#!/usr/bin/env bash
# Builds the Traefik v3 binary that the Ingress end-to-end test
# (tests/helm/test_ingress.py) runs as the cluster's Ingress controller, from
# the Traefik module on the Go module proxy: no release download.
#
# The proxy serves Traefik itself but not everything its release build links:
#   - the nested module github.com/traefik/traefik/dynamic/ext (Traefik's go.mod
#     replaces it with ./pkg/config/dynamic/ext, which a module zip leaves out):
#     the open-source build's extension point is two empty structs, written here;
#   - a dozen DNS-provider SDKs that only lego's ACME DNS-01 challenge factory
#     imports: the factory call is cut out of pkg/provider/acme, so an ACME
#     resolver with a DNS challenge fails with a clear error.  Nothing the
#     Kubernetes Ingress provider, the router or the TLS store uses is touched.
#   - Traefik's fork of github.com/abbot/go-http-auth (basic/digest auth
#     middlewares): the upstream release v0.4.0 is used instead; the two things
#     the fork adds are filled in: the password check goes through v0.4.0's
#     BasicAuth.CheckAuth (its hash formats), and a stale digest nonce gets the
#     plain digest challenge.
# The patches are checked to apply exactly; a new version that moves the code
# fails the build instead of building something else.
#
# Output goes to a cache OUTSIDE the repo, keyed by the Traefik version:
#   ${EDGE_INGRESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/traefik}/<version>/traefik
# A machine builds it once; later runs find it and do nothing.
# If EDGE_TRAEFIK_BIN is set, that binary is used as it is (only checked).
# The last line of stdout is always the path of the binary; progress goes to
# stderr so callers can take the path with `tail -n1`.
#
# The first build takes about 5 minutes on 2 busy cores (module downloads extra); a line is printed every
# EDGE_INGRESS_PROGRESS_SECONDS (default 30) so CI shows life.
set -euo pipefail

traefik_version=v3.7.13

log() { printf '[ingress-bin] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -n "${EDGE_TRAEFIK_BIN:-}" ]]; then
    [[ -f "$EDGE_TRAEFIK_BIN" && -x "$EDGE_TRAEFIK_BIN" ]] ||
        die "EDGE_TRAEFIK_BIN=$EDGE_TRAEFIK_BIN is not an executable file"
    log "using existing traefik at $EDGE_TRAEFIK_BIN"
    printf '%s\n' "$EDGE_TRAEFIK_BIN"
    exit 0
fi

cache_root="${EDGE_INGRESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/traefik}"
out_dir="$cache_root/$traefik_version"
binary="$out_dir/traefik"

if [[ -f "$binary" && -x "$binary" ]]; then
    log "cached: traefik $traefik_version at $binary"
    printf '%s\n' "$binary"
    exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (looked in PATH and /usr/local/go/bin)"
# Never download another toolchain: Traefik's go.mod `go` line fits the local Go.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOWORK=off

mkdir -p "$out_dir"
# One build at a time per version (two test runs started together share it).
if command -v flock >/dev/null; then
    exec 9>"$out_dir/.lock"
    if ! flock -n 9; then
        log "another build of traefik $traefik_version is running; waiting for it"
        flock 9
    fi
    if [[ -f "$binary" && -x "$binary" ]]; then
        log "built meanwhile: $binary"
        printf '%s\n' "$binary"
        exit 0
    fi
fi
tmp_dir="$(mktemp -d "$out_dir/.build.XXXXXX")"
ticker_pid=""
cleanup() {
    [[ -n "$ticker_pid" ]] && kill "$ticker_pid" 2>/dev/null || true
    chmod -R u+w "$tmp_dir" 2>/dev/null || true
    rm -rf "$tmp_dir"
}
trap cleanup EXIT

log "downloading github.com/traefik/traefik/v3@$traefik_version from the Go module proxy"
module_dir="$(cd "$tmp_dir" && "$go_bin" mod download -json \
    "github.com/traefik/traefik/v3@$traefik_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$module_dir" && -d "$module_dir" ]] || die "go mod download gave no module directory"
src="$tmp_dir/src"
cp -R "$module_dir" "$src"
chmod -R u+w "$src"

# Patch 1: the extension point module that the proxy does not serve.
ext_dir="$src/pkg/config/dynamic/ext"
[[ ! -e "$ext_dir" ]] || die "$ext_dir exists in this version: revisit patch 1"
grep -q '^replace github.com/traefik/traefik/dynamic/ext => ./pkg/config/dynamic/ext$' "$src/go.mod" ||
    die "Traefik's go.mod no longer replaces dynamic/ext with ./pkg/config/dynamic/ext"
mkdir -p "$ext_dir"
printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' >"$ext_dir/go.mod"
cat >"$ext_dir/ext.go" <<'GO'
// Package ext is the open-source build's empty extension of the dynamic HTTP
// configuration (written by tests/ingress-bin/build.sh).
package ext

// HTTP is embedded in dynamic.HTTPConfiguration.
type HTTP struct{}

// Router is embedded in dynamic.Router.
type Router struct{}
GO

# Patch 2: no DNS-01 provider factory (its SDKs are not all served).
acme="$src/pkg/provider/acme/provider.go"
import_line='	"github.com/go-acme/lego/v5/providers/dns"'
call_line='		provider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)'
[[ "$(grep -cxF "$import_line" "$acme")" == 1 && "$(grep -cxF "$call_line" "$acme")" == 1 ]] ||
    die "pkg/provider/acme/provider.go changed: revisit patch 2"
grep -vxF "$import_line" "$acme" |
    sed 's|^\t\tprovider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)$|\t\terr = fmt.Errorf("DNS challenge provider %q: not built into this binary (tests/ingress-bin/build.sh)", p.DNSChallenge.Provider)|' \
    >"$acme.new"
mv "$acme.new" "$acme"
grep -q 'not built into this binary' "$acme" || die "patch 2 did not apply"

# Patch 3: upstream go-http-auth instead of the fork the proxy does not serve.
grep -q '^	github.com/abbot/go-http-auth => github.com/containous/go-http-auth ' "$src/go.mod" ||
    die "Traefik's go.mod no longer replaces abbot/go-http-auth: revisit patch 3"
(cd "$src" && "$go_bin" mod edit -dropreplace=github.com/abbot/go-http-auth \
    -require=github.com/abbot/go-http-auth@v0.4.0)
auth="$src/pkg/middlewares/auth"
[[ "$(grep -c 'goauth.CheckSecret' "$auth/basic_auth.go")" == 1 &&
    "$(grep -c 'd.auth.RequireAuthStale(rw, req)' "$auth/digest_auth.go")" == 1 ]] ||
    die "pkg/middlewares/auth changed: revisit patch 3"
sed -i 's/goauth\.CheckSecret/upstreamCheckSecret/' "$auth/basic_auth.go"
sed -i 's/d\.auth\.RequireAuthStale(rw, req)/d.auth.RequireAuth(rw, req)/' "$auth/digest_auth.go"
cat >"$auth/upstream_check_secret.go" <<'GO'
package auth

import (
	"net/http"

	goauth "github.com/abbot/go-http-auth"
)

// upstreamCheckSecret reports whether password matches the htpasswd secret, by
// go-http-auth v0.4.0's own check (written by tests/ingress-bin/build.sh).
func upstreamCheckSecret(password, secret string) bool {
	req := &http.Request{Header: http.Header{}}
	req.SetBasicAuth("user", password)
	check := &goauth.BasicAuth{Secrets: func(string, string) string { return secret }}
	return check.CheckAuth(req) == "user"
}
GO

log "building traefik $traefik_version into $binary with $("$go_bin" version)"
start=$SECONDS
(
    while sleep "${EDGE_INGRESS_PROGRESS_SECONDS:-30}" </dev/null >/dev/null 2>&1; do
        log "still building, $((SECONDS - start))s"
    done
) &
ticker_pid=$!
ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$traefik_version"
if ! (cd "$src" && "$go_bin" build -mod=mod -trimpath -ldflags "$ldflags" \
    -o "$tmp_dir/traefik" ./cmd/traefik >&2); then
    die "go build ./cmd/traefik failed"
fi
kill "$ticker_pid" 2>/dev/null || true
wait "$ticker_pid" 2>/dev/null || true
ticker_pid=""
chmod 0755 "$tmp_dir/traefik"
"$tmp_dir/traefik" version >/dev/null || die "the built traefik does not run"
mv -f "$tmp_dir/traefik" "$binary"
log "built traefik $traefik_version in $((SECONDS - start))s"
printf '%s\n' "$binary"
