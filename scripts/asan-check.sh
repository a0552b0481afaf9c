#!/usr/bin/env bash
# AddressSanitizer run of the native code: builds a copy of the working tree with the addon and
# build/vusb's libusb compiled with -fsanitize=address, then runs tests under Node with libasan
# preloaded (child processes inherit it: daemons, sims, usbmuxd on the vusb library). Any report
# aborts the test process, so a failing test here that passes in `npm test` is a memory error.
#
#   scripts/asan-check.sh                      # the native-heavy folders
#   scripts/asan-check.sh test/vusb test/mux   # folders or .test.ts files of your choice
#
# Needs gcc's libasan (Debian: libasan8, part of gcc). Leaves nothing in the work tree: the copy
# lives in a temporary directory, removed at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/muxwire-asan-XXXXXX")
trap 'rm -rf "$work"' EXIT

libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "asan-check: gcc has no libasan.so ($libasan)" >&2
  exit 2
fi

# The working tree as it is (tracked and new files), without build outputs.
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work"
ln -s "$root/node_modules" "$work/node_modules"
cd "$work"

npx tsc -p tsconfig.json
nodedir=$(dirname "$(dirname "$(command -v node)")")
CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" \
CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" \
LDFLAGS="-fsanitize=address" \
  npx node-gyp rebuild --nodedir="$nodedir" >"$work/node-gyp.log" 2>&1 || { tail -20 "$work/node-gyp.log" >&2; exit 1; }
sed -i "s|'-std=gnu11', '-O2', '-g',|'-std=gnu11', '-O1', '-g', '-fsanitize=address', '-fno-omit-frame-pointer',|" scripts/build-vusb.mjs
node scripts/build-vusb.mjs

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(test/accel test/mux test/transport test/vusb test/daemon)
files=()
for t in "${targets[@]}"; do
  t=${t%/}
  if [ -d "$t" ]; then
    for f in "dist/${t}"/*.test.js; do files+=("$f"); done
  else
    files+=("dist/${t%.ts}.js")
  fi
done

echo "asan-check: ${#files[@]} test files under AddressSanitizer"
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  node --test --test-timeout=300000 --test-reporter=dot "${files[@]}"
