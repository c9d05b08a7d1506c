#!/usr/bin/env bash
# A build at the declared `rust-version` (workspace.package in Cargo.toml), with that exact
# toolchain, and a check that no locked dependency declares a newer one. Fails loudly when the
# toolchain is not installed and cannot be installed: a declared version nobody built is a claim,
# not a fact.
set -euo pipefail
cd "$(dirname "$0")/.."
declared=$(sed -n '/^\[workspace.package\]/,/^\[/s/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if [ -z "$declared" ]; then
  echo "MSRV: no rust-version in [workspace.package] of Cargo.toml" >&2
  exit 1
fi
# rustup names a release by its full version (1.95 -> 1.95.0).
toolchain="$declared"
[[ "$toolchain" =~ ^[0-9]+\.[0-9]+$ ]] && toolchain="$toolchain.0"
if ! rustup toolchain list | grep -q "^$toolchain-"; then
  if ! rustup toolchain install --profile minimal "$toolchain"; then
    echo "MSRV: toolchain $toolchain (the declared rust-version) is not installed and cannot be installed" >&2
    exit 1
  fi
fi
echo "MSRV: declared $declared; building with $(rustc +"$toolchain" --version)"

# Every locked package (dependencies of the library, the tests, the benches) must declare a
# rust-version no newer than ours, or none.
cargo +"$toolchain" metadata --format-version 1 --locked | python3 -c '
import json, sys
declared = tuple(int(x) for x in sys.argv[1].split("."))
m = json.load(sys.stdin)
newer = []
for p in m["packages"]:
    v = p.get("rust_version")
    if v and tuple(int(x) for x in v.split(".")) > declared + (0,) * (3 - len(declared)):
        newer.append("%s %s needs %s" % (p["name"], p["version"], v))
if not newer:
    print("MSRV: %d locked packages, none declares a newer rust-version" % len(m["packages"]))
if newer:
    print("MSRV: these need a newer toolchain than the declared one:\n  " + "\n  ".join(newer), file=sys.stderr)
    sys.exit(1)
' "$declared"

cargo +"$toolchain" build --locked --workspace --all-targets --all-features
cargo +"$toolchain" build --locked --workspace --lib --no-default-features
echo "MSRV: the workspace builds with $toolchain (all targets, all features; the library alone)"
