#!/bin/sh
# Runs the libFuzzer targets of runtime/fuzz/.
#   scripts/fuzz.sh DIR SECONDS [TARGET...]   each target for SECONDS (all when none named)
#   scripts/fuzz.sh --targets                 the target names
# New inputs go to DIR/corpus/<target> (the repository's corpus is only read);
# a crash is saved as DIR/crashes/<target>-crash-* and fails the run: copy it
# to runtime/fuzz/corpus/<target>/ as a regression input once it is fixed.
set -u
TARGETS="pattern trie dotenv control props json log presence jsondec"
if [ "${1:-}" = "--targets" ]; then echo $TARGETS; exit 0; fi
DIR=${1:?usage: scripts/fuzz.sh DIR SECONDS [TARGET...]}
SECONDS_EACH=${2:-60}
shift 2 || shift $#
[ $# -gt 0 ] && TARGETS="$*"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bad=0
for t in $TARGETS; do
  mkdir -p "$DIR/corpus/$t" "$DIR/crashes"
  log="$DIR/fuzz-$t.log"
  "$DIR/fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="$DIR/crashes/$t-" "$DIR/corpus/$t" "$ROOT/runtime/fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  runs=$(grep -aE '^stat::number_of_executed_units' "$log" | grep -oE '[0-9]+$')
  cov=$(grep -aE '^#[0-9]+' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz_$t: ${runs:-?} runs in ${SECONDS_EACH} s, ${cov:-no coverage line}"
  else
    grep -aE 'ERROR|SUMMARY|Test unit written' "$log" | head -n 5
    echo "fuzz_$t: FAILED (exit $rc), see $log"
    bad=1
  fi
done
exit $bad
