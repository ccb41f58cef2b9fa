#!/usr/bin/env bash
# Regenerates every model golden set under tests/golden/data/models/ from `longcat mkmodel`
# checkpoints (kept out of CI; needs .venv-golden from setup_venv.sh and a built `longcat`).
#   bash tests/golden/make_model_golden.sh [path/to/longcat]
# Each set records in source.json how the C++ tests regenerate its checkpoint bit for bit.
set -euo pipefail
cd "$(dirname "$0")/../.."
cli=${1:-build/dev/services/longcat/longcat}
py=.venv-golden/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# fp8 sets: "fp32" = reference on the fp32 dequantized weights (we keep bf16: compared within
# the bf16-rounding tolerance); "bf16" = reference on the same weights rounded to bf16, as the
# CPU loader keeps them (compared within 1e-4).
#      set name           preset  seed dtype cli-check fp8-reference
sets=("tiny-fp32          tiny    1    fp32  true      -"
      "tiny-bf16          tiny    1    bf16  false     -"
      "tiny-b-fp32        tiny-b  2    fp32  true      -"
      "tiny-b-bf16        tiny-b  2    bf16  false     -"
      "tiny-b-fp8         tiny-b  2    fp8   false     fp32"
      "tiny-b-fp8-bf16ref tiny-b  2    fp8   false     bf16")
for s in "${sets[@]}"; do
  read -r name preset seed dtype cli_check fp8_ref <<<"$s"
  out=tests/golden/data/models/$name
  mkdir -p "$out"
  "$cli" mkmodel --preset "$preset" --seed "$seed" --dtype "$dtype" --out "$work/$name"
  extra=()
  [[ $fp8_ref == bf16 ]] && extra=(--fp8-round-bf16)
  "$py" tests/golden/make_golden.py --model "$work/$name" --out "$out" \
    --logits-budget-bytes 250000 --keep-last 24 "${extra[@]}"
  printf '{"preset": "%s", "seed": %s, "dtype": "%s", "cli": %s, "fp8_reference": "%s"}\n' \
    "$preset" "$seed" "$dtype" "$cli_check" "$fp8_ref" >"$out/source.json"
done
