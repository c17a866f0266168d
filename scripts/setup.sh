#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools.
#
# torch comes first and as the machine needs it: a CUDA machine (nvidia-smi answers) gets the
# default torch build; a machine without a GPU gets torch==2.13.0, the CPU build where pip's
# find-links offer it (as on our CI machines). Elsewhere point ITH_TORCH_INDEX at a CPU wheel
# index (e.g. https://download.pytorch.org/whl/cpu), or install torch yourself first: an
# installed torch is kept. Versions of everything else are pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        echo "setup: GPU found, installing torch (default CUDA build)"
        pip_install "${ITH_TORCH_SPEC:-torch}"
    else
        echo "setup: no GPU, installing the CPU build of torch"
        pip_install "${ITH_TORCH_SPEC:-torch==2.13.0}" ${ITH_TORCH_INDEX:+--index-url "$ITH_TORCH_INDEX"}
    fi
fi
pip_install -c constraints.txt -e ".[test]"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
