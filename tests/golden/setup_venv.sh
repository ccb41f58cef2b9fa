#!/usr/bin/env bash
# Creates <repo>/.venv-golden and installs tests/golden/requirements.txt into it.
# Golden-data tooling only; CI never runs this. Usage: bash tests/golden/setup_venv.sh
# Env: PYTHON (interpreter to build the venv from, default python3),
#      VENV (target dir, default <repo>/.venv-golden).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VENV:-$repo/.venv-golden}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip

# Prefer the CPU-only torch build (no CUDA wheels) when its index is reachable.
extra=()
if curl -fsS --max-time 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
  echo "setup_venv: using the CPU-only torch index" >&2
else
  echo "setup_venv: CPU-only torch index unreachable; installing torch from PyPI" >&2
fi
"$venv/bin/python" -m pip install "${extra[@]}" -r "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
import torch, transformers, tokenizers, safetensors, numpy
from transformers import LongcatFlashForCausalLM  # noqa: F401  (must exist)
print("torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__,
      "numpy", numpy.__version__)
PY
echo "setup_venv: ready: $venv/bin/python" >&2
