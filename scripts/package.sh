#!/usr/bin/env bash
# Builds a release archive of HappyX: a stripped `happyx` binary with its debug
# info split into `happyx.debug` (kept, linked by .gnu_debuglink, so a crash
# backtrace or `gdb` on a production host can be symbolised later), shell
# completions, man pages, the example configuration, the systemd unit and the
# licence, packed as target/dist/happyx-<version>-<target>.tar.gz with a
# .sha256 beside it.
#
#   scripts/package.sh            # release build (the profile in Cargo.toml)
#   PROFILE=dev scripts/package.sh   # same layout from a debug build (quick check)
#
# Needs: cargo, objcopy (binutils), tar, sha256sum. Prints the archive's path
# on stdout; progress goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=${PROFILE:-release}
case "$profile" in
  release) outdir=target/release ;;
  dev) outdir=target/debug ;;
  *) outdir="target/$profile" ;;
esac

echo "package: building happyx ($profile)" >&2
cargo build --locked --profile "$profile" -p happyx --bin happyx >&2

version=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="happyx"))')
target=$(rustc -vV | sed -n 's/^host: //p')
name="happyx-$version-$target"
stage="target/dist/$name"
rm -rf "$stage" "target/dist/$name.tar.gz" "target/dist/$name.tar.gz.sha256"
mkdir -p "$stage/completions" "$stage/man"

echo "package: splitting debug info" >&2
cp "$outdir/happyx" "$stage/happyx"
# The debug file keeps the DWARF and the symbol table; the binary keeps neither,
# only a link (name + CRC) to the debug file.
objcopy --only-keep-debug "$stage/happyx" "$stage/happyx.debug"
objcopy --strip-all --add-gnu-debuglink="$stage/happyx.debug" "$stage/happyx"
chmod 0644 "$stage/happyx.debug"

echo "package: completions, man pages, examples" >&2
for shell in bash zsh fish; do
  "$stage/happyx" completions "$shell" >"$stage/completions/happyx.$shell"
done
"$stage/happyx" man "$stage/man" >&2
cp LICENSE README.md "$stage/"
cp examples/happyx.toml "$stage/happyx.toml.example"
cp examples/systemd/happyx.service "$stage/happyx.service"

tar -C target/dist --owner=0 --group=0 --sort=name -czf "target/dist/$name.tar.gz" "$name"
(cd target/dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "package: $(du -h "$stage/happyx" | cut -f1) binary, $(du -h "$stage/happyx.debug" | cut -f1) debug info" >&2
echo "$root/target/dist/$name.tar.gz"
