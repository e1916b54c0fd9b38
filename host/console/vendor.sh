#!/usr/bin/env bash
# Refreshes the console's vendored browser libraries from their npm packages at
# the pinned versions below, with their licences. The files are committed: the
# server never needs Node.js or the network, and nothing is loaded from a CDN.
# Usage: host/console/vendor.sh   (then review `git diff host/console/vendor`)
set -euo pipefail
cd "$(dirname "$0")"
XTERM=6.0.0
FIT=0.11.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@xterm/xterm@$XTERM" "@xterm/addon-fit@$FIT" >/dev/null)
mkdir -p "$tmp/xterm" "$tmp/fit"
tar -xzf "$tmp"/xterm-xterm-$XTERM.tgz -C "$tmp/xterm"
tar -xzf "$tmp"/xterm-addon-fit-$FIT.tgz -C "$tmp/fit"
rm -rf vendor && mkdir -p vendor
cp "$tmp/xterm/package/lib/xterm.js" vendor/xterm.js
cp "$tmp/xterm/package/css/xterm.css" vendor/xterm.css
cp "$tmp/xterm/package/LICENSE" vendor/LICENSE.xterm
cp "$tmp/fit/package/lib/addon-fit.js" vendor/addon-fit.js
cp "$tmp/fit/package/LICENSE" vendor/LICENSE.addon-fit
# Source-map comments point at files we do not ship.
sed -i '/^\/\/# sourceMappingURL=/d' vendor/xterm.js vendor/addon-fit.js
cat > vendor/VERSIONS <<V
@xterm/xterm $XTERM
@xterm/addon-fit $FIT
V
ls -l vendor
