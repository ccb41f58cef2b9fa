#!/usr/bin/env bash
# The main job: installs what is missing, builds, generates the demo checkpoint (once), starts
# the local serving cluster (deploy/local/pd.json: the OpenAI-compatible gateway with its
# router, the coordinator, a prefill worker and a decode worker, each side with its own expert
# pool — 1 and 2 expert groups — as separate processes on 127.0.0.1 talking CAF and UCX), sends
# one chat completion through the gateway and prints a curl example. LONGCAT_TOPOLOGY picks
# another topology (deploy/local/default.json: a TP=2 attention group and 3 expert groups).
# The cluster keeps running afterwards; stop it with the `cluster down` line printed at the end.
# Extra arguments are passed to `longcat generate --cluster` (a second demo, through CAF).
set -euo pipefail
cd "$(dirname "$0")/../.."
source ops/scripts/env.sh
export UCX_WARN_UNUSED_ENV_VARS=n
bash ops/scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc)" \
  --target longcat longcat-coordinator longcat-attention longcat-experts longcat-gateway
cli=./build/release/services/longcat/longcat
model=build/models/demo
state=build/cluster/state.json
topology=${LONGCAT_TOPOLOGY:-deploy/local/pd.json}
if [[ ! -f $model/config.json ]]; then
  "$cli" mkmodel --preset demo --out "$model" --seed 7 --dtype bf16
fi
if [[ -f $state ]]; then
  "$cli" cluster down --state "$state" || true   # a cluster left by an earlier run
fi
"$cli" cluster up --topology "$topology" --model "$model" --state "$state"
gateway=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("gateway_url",""))' "$state")
model_name=$(basename "$model")
if [[ -n $gateway ]]; then
  body='{"model": "'"$model_name"'", "messages": [{"role": "user", "content": "Write a short note about the Debian project."}], "max_tokens": 48, "temperature": 0}'
  echo
  echo "POST $gateway/v1/chat/completions:"
  curl -sS --max-time 120 "$gateway/v1/chat/completions" -H 'Content-Type: application/json' -d "$body"
  echo
fi
if (($#)); then
  "$cli" generate --cluster "$state" --model "$model" "$@"
fi
echo
if [[ -n $gateway ]]; then
  echo "The OpenAI-compatible API is at $gateway/v1 (model \"$model_name\"). Try:"
  echo "  curl -N $gateway/v1/chat/completions -H 'Content-Type: application/json' \\"
  echo "    -d '{\"model\": \"$model_name\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32, \"stream\": true}'"
fi
echo "The cluster is still running. Stop it with:"
echo "  $cli cluster down --state $state"
