#!/usr/bin/env bash
# The shared-prefix chat workload against round robin, P2C and the LLM-aware pick (benches/llm.rs).
#
#   benches/llm/run.sh [rates] [seconds-per-rate] [extra args for benches/llm.rs]
#
# e.g. benches/llm/run.sh 5,10,20,40 20. Prints the markdown table for benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
rates=${1:-5,10,20,40}; secs=${2:-20}; shift $(( $# > 2 ? 2 : $# ))
cargo build --release --quiet --bin meridian
cargo build --release --quiet --bench llm
bench=$(ls -t target/release/deps/llm-* | grep -v '\.d$' | head -1)
"$bench" --bin target/release/meridian --rates "$rates" --seconds "$secs" "$@"
