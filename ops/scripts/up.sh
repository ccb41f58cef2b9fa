#!/usr/bin/env bash
# The main job: installs what is missing, builds, generates the demo checkpoint (once) and
# runs `longcat generate` on it.  Extra arguments are passed to `longcat generate`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source ops/scripts/env.sh
bash ops/scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release --target longcat -j"$(nproc)"
model=build/models/demo
if [[ ! -f $model/config.json ]]; then
  ./build/release/services/longcat/longcat mkmodel --preset demo --out "$model" --seed 7 --dtype bf16
fi
if (($#)); then
  exec ./build/release/services/longcat/longcat generate --model "$model" "$@"
fi
exec ./build/release/services/longcat/longcat generate --model "$model" --chat \
  --prompt "Write a short note about the Debian project." --max-tokens 48
