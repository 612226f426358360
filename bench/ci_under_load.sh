#!/usr/bin/env bash
# Three CI runs of the README's test command on a fresh clone while two busy loops hold both cores.
# The clone goes beside this checkout (tests read ../shared relative to it). Figures: BENCHMARKS.md.
set -u
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
CLONE="$ROOT/../ciclone"
rm -rf "$CLONE" && git clone -q "$ROOT" "$CLONE" && cd "$CLONE" || exit 1
python3 -c "while True: pass" & B1=$!
python3 -c "while True: pass" & B2=$!
trap 'kill $B1 $B2 2>/dev/null' EXIT
echo "busy pids $B1 $B2 head $(git rev-parse --short HEAD)"
for i in 1 2 3; do
  s=$(date +%s); CI=true bash .ci/run </dev/null > "/tmp/ci_under_load_run$i.log" 2>&1; rc=$?; e=$(date +%s)
  echo "run $i rc=$rc seconds=$((e-s)) $(tail -1 /tmp/ci_under_load_run$i.log)"
done
