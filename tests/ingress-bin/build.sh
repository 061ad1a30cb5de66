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
# The steps shared with the other Go-tool scripts are in tests/lib/gotool.sh.
set -euo pipefail

traefik_version=v3.7.13

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# log, die and the gotool_* steps every Go-tool build shares.
source "$here/../lib/gotool.sh" ingress-bin

gotool_use_existing EDGE_TRAEFIK_BIN traefik

out_dir="$(gotool_cache_root EDGE_INGRESS_CACHE traefik)/$traefik_version"
binary="$out_dir/traefik"

if gotool_is_exe "$binary"; then
    log "cached: traefik $traefik_version at $binary"
    gotool_result "$binary"
fi

# Traefik's go.mod `go` line fits the local Go.
gotool_find_go
export CGO_ENABLED=0
export GOWORK=off

mkdir -p "$out_dir"
gotool_lock "$out_dir" "traefik $traefik_version" "$binary" gotool_is_exe "$binary"
gotool_tmp_dir "$out_dir"

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
cd "$src"
gotool_go_build "${EDGE_INGRESS_PROGRESS_SECONDS:-30}" "" "$tmp_dir/traefik" ./cmd/traefik \
    -mod=mod -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$traefik_version"
"$tmp_dir/traefik" version >/dev/null || die "the built traefik does not run"
mv -f "$tmp_dir/traefik" "$binary"
log "built traefik $traefik_version in $((SECONDS - start))s"
gotool_result "$binary"
