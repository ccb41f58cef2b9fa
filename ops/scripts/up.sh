#!/usr/bin/env bash
# The main job: installs what is missing, builds, generates the demo checkpoint (once), starts
# the local cluster (deploy/local/default.json: a TP=2 attention group and 3 expert groups, as
# separate processes on 127.0.0.1 talking CAF and UCX) and generates through it.
# The cluster keeps running afterwards; stop it with the `cluster down` line printed at the end.
# Extra arguments are passed to `longcat generate` (default: a chat prompt).
set -euo pipefail
cd "$(dirname "$0")/../.."
source ops/scripts/env.sh
export UCX_WARN_UNUSED_ENV_VARS=n
bash ops/scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc)" \
  --target longcat longcat-coordinator longcat-attention longcat-experts
cli=./build/release/services/longcat/longcat
model=build/models/demo
state=build/cluster/state.json
topology=${LONGCAT_TOPOLOGY:-deploy/local/default.json}
if [[ ! -f $model/config.json ]]; then
  "$cli" mkmodel --preset demo --out "$model" --seed 7 --dtype bf16
fi
if [[ -f $state ]]; then
  "$cli" cluster down --state "$state" || true   # a cluster left by an earlier run
fi
"$cli" cluster up --topology "$topology" --model "$model" --state "$state"
if (($#)); then
  "$cli" generate --cluster "$state" --model "$model" "$@"
else
  "$cli" generate --cluster "$state" --model "$model" --chat \
    --prompt "Write a short note about the Debian project." --max-tokens 48
fi
echo
echo "The cluster is still running. Stop it with:"
echo "  $cli cluster down --state $state"
