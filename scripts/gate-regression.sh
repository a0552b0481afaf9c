#!/usr/bin/env bash
# Shows that the demux gate guards what it says (issue 18): builds a copy of the working tree with
# the native demuxer forced onto its old copying path (every payload of a packet that spans
# transfers staged whole, then copied again into the ring: Demuxer::StartStream always declines),
# runs the quick micro-benchmarks with the demux thresholds of bench/gate.json, and expects the
# "demux native ÷ memcpy" threshold to FAIL there. Then runs the same on the unmodified tree, which
# must pass. Exit 0 when both hold.
#
#   scripts/gate-regression.sh            # each build measured once
#   scripts/gate-regression.sh 3          # each build measured 3 times (all must come out right)
#
# Leaves nothing in the work tree: the copy lives in a temporary directory, removed at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/muxwire-regress-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Only the demux thresholds: the micro-benchmarks run alone (no end-to-end race).
node -e '
  const g = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  g.thresholds = g.thresholds.filter((t) => t.kind === "demux");
  require("fs").writeFileSync(process.argv[2], JSON.stringify(g));
' "$root/bench/gate.json" "$work/gate-demux.json"

(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work"
ln -s "$root/node_modules" "$work/node_modules"
marker='bool Demuxer::StartStream() {'
grep -qF "$marker" "$work/native/demuxer.cc" || { echo "gate-regression: $marker not found in native/demuxer.cc" >&2; exit 2; }
sed -i "s|^$marker\$|$marker\n  if (staged_ > 0) return false;  // gate-regression.sh: the old copying path|" "$work/native/demuxer.cc"
(cd "$work" && npx tsc -p tsconfig.json && node scripts/build-native.mjs >/dev/null)

gate() { # dir label expect(pass|fail)
  local dir=$1 label=$2 expect=$3 out status
  for i in $(seq "$runs"); do
    set +e
    out=$(cd "$dir" && node dist/bench/run.js --quick --no-e2e --gate --gate-file "$work/gate-demux.json" --json "$work/report.json" 2>/dev/null)
    status=$?
    set -e
    echo "== $label, run $i: exit $status"
    echo "$out" | sed -n '/^GATE/,/^$/p'
    if [ "$expect" = fail ]; then
      echo "$out" | grep -q '^demux native ÷ memcpy.*FAIL' || { echo "gate-regression: the regressed build passed the memcpy threshold" >&2; return 1; }
    else
      [ "$status" -eq 0 ] || { echo "gate-regression: the unmodified build failed the demux gate" >&2; return 1; }
    fi
  done
}

gate "$work" "regressed build (payloads staged, then copied)" fail
gate "$root" "this build" pass
echo "gate-regression: the demux gate fails the regressed build and passes this one"
