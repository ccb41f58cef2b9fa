#!/usr/bin/env bash
# The Python environment of the end-to-end tests (tests/e2e/): build/venv-test with the official
# `openai` client at a pinned version. Idempotent (a venv that already has the pin is left as it
# is); any failure exits non-zero with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_PIN="openai==1.109.1"
venv=build/venv-test
# Debian's python3 (install-deps.sh installs python3 and python3-venv); LONGCAT_TEST_PYTHON overrides.
python=${LONGCAT_TEST_PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x /usr/bin/python3 ]]; then python=/usr/bin/python3; else python=python3; fi
fi

want=${OPENAI_PIN#openai==}
if [[ -x $venv/bin/python ]] &&
   "$venv/bin/python" -c "import sys, openai; sys.exit(openai.__version__ != '$want')" 2>/dev/null; then
  exit 0
fi

fail() { echo "test-venv: $*" >&2; exit 1; }
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "" 2>/dev/null; then
  "$python" -m venv --clear "$venv" || fail "cannot create $venv with $python -m venv (is python3-venv installed?)"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$OPENAI_PIN" >"$log" 2>&1; then
  cat "$log" >&2
  fail "pip install $OPENAI_PIN into $venv failed"
fi
"$venv/bin/python" -c "import sys, openai; sys.exit(openai.__version__ != '$want')" ||
  fail "$venv: openai is not $want after the install"
echo "test-venv: $venv has $OPENAI_PIN" >&2
