#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each one for a short, bounded
# time (FUZZ_SECONDS each, default 20) from the corpus kept in fuzz/corpus.
# Inputs found on the way go to a temporary directory, not the repository.
# A panic or a broken property fails the script, and libFuzzer leaves the
# input that did it in fuzz/artifacts/TARGET/. Installs cargo-fuzz (the
# version below) when it is missing. Arguments: targets to run (default:
# all). FUZZ_SEED (1) fixes libFuzzer's seed, so the test command's run is
# the same each time; another seed explores further.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_fuzz_version=0.13.2
seconds=${FUZZ_SECONDS:-20}

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

# Stable Rust: libFuzzer's coverage instrumentation needs no nightly, the
# sanitizers do (-Zsanitizer), so none is used. The dev profile of
# fuzz/Cargo.toml (optimised, debug assertions on, so an arithmetic overflow
# is a crash too) builds in a fraction of cargo-fuzz's release mode's time.
flags=(--sanitizer none --dev --debug-assertions)
cargo fuzz build "${flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  # TMPDIR: the files a target writes (the config target's) go with the rest.
  if ! TMPDIR="$work" cargo fuzz run "${flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    cat "$work/$target.log" >&2
    echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
  echo "fuzz $target: ${runs:-?} runs in ${seconds}s, no failure"
done
