#!/bin/sh
# Installs the Node MCP peers used by the end-to-end tests (the official TypeScript SDK,
# server-everything, the conformance suite), the OpenID provider oidc-provider (run by
# oidc.mjs) and a Node 22 runtime into tests/node/node_modules, exactly as package-lock.json
# pins them. CI runs it before `go test ./tests/...`.
#
# Idempotent: when node_modules was installed from the same package.json and lock file (a stamp
# file holds their hash) it only re-checks the Node 22 binary and returns.
set -eu

cd "$(dirname "$0")"

stamp=node_modules/.gatehouse-install-stamp
# The stamp is the SHA-256 of package.json followed by package-lock.json; the Go helpers
# (tests/internal/nodepeer) compute the same digest to detect a stale install.
if command -v sha256sum >/dev/null 2>&1; then
	want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
else
	want=$(cat package.json package-lock.json | shasum -a 256 | cut -d' ' -f1)
fi

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x node_modules/node/bin/node ]; then
	rm -f "$stamp"
	# allowScripts in package.json approves the preinstall of the `node` package (it fetches the
	# platform binary); --strict-allow-scripts fails loudly if any other dependency grows one.
	npm ci --no-audit --no-fund --strict-allow-scripts
	printf '%s\n' "$want" >"$stamp"
fi

version=$(node_modules/node/bin/node --version)
case "$version" in
v22.*) ;;
*)
	echo "install.sh: node_modules/node/bin/node --version printed '$version', want v22.x" >&2
	rm -f "$stamp"
	exit 1
	;;
esac
echo "tests/node: peers installed, Node $version"
