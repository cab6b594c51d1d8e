#!/usr/bin/env bash
# Create (or update) the project's virtual environment. Idempotent: re-running skips what is already installed.
#
#   scripts/setup.sh                      # CPU build, .venv/ in the repo root
#
# Switches (environment variables):
#   PGD_VENV=path           where the venv goes (default: .venv in the repo root)
#   PGD_PYTHON=python3.11   interpreter used to create the venv (default python3.11, else python3; 3.10-3.12,
#                           3.11 is the tested one)
#   PGD_CUDA=cpu            torch build: cpu (default), a CUDA tag such as cu126 / cu128 (torch's own wheel index
#                           https://download.pytorch.org/whl/<tag>, mmcv's CUDA ops compiled), or pypi (the plain
#                           PyPI torch, CUDA bundled)
#   PGD_TORCH_INDEX_URL=url override the wheel index used for torch (e.g. a local mirror)
#   MMCV_WHEEL_DIR=dir      a directory holding a prebuilt mmcv-2.1.0 wheel for this Python/torch (default:
#                           ../shared/wheels beside the checkout, when it exists); without one mmcv is compiled from
#                           the sdist with its C++ ops (~10 min on 2 cores)
#   PGD_FETCH_IMAGENET=1    also download the paper profile's ImageNet backbone files (ResNet-50 / 101 from
#                           download.pytorch.org, MobileNetV2 from download.openmmlab.com, ~330 MB) into torch.hub's
#                           cache ($TORCH_HOME/hub/checkpoints), so paper-profile runs start offline; without it the
#                           first paper-profile run downloads them (nothing else, torchvision included, is needed)
set -euo pipefail

TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0   # mmdet 3.3 refuses mmcv >= 2.2
MMDET_VERSION=3.3.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGD_VENV:-$ROOT/.venv}"
if [[ -n "${PGD_PYTHON:-}" ]]; then PYTHON="$PGD_PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11
else PYTHON=python3; fi
CUDA="${PGD_CUDA:-cpu}"

log() { printf '[setup %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "interpreter '$PYTHON' not found; install Python 3.11 or set PGD_PYTHON"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
    || die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); need 3.10-3.12"

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# True when the venv already holds exactly this distribution version (keeps re-runs fast and offline-friendly).
installed() { [[ "$("$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null)" == "$2" ]]; }

# setuptools: mmcv's setup.py imports pkg_resources, which setuptools 81 dropped; torch 2.13 requires >=77.0.3.
SETUPTOOLS_SPEC='setuptools>=77.0.3,<81'
log "pip, wheel, $SETUPTOOLS_SPEC"
"${PIP[@]}" install -q --upgrade pip wheel "$SETUPTOOLS_SPEC"

# --- torch ------------------------------------------------------------------------------------------------------
case "$CUDA" in
    pypi) TORCH_SPEC="torch==$TORCH_VERSION"; TORCH_WANT="$TORCH_VERSION"; TORCH_INDEX="" ;;
    cpu|cu*) TORCH_SPEC="torch==$TORCH_VERSION+$CUDA"; TORCH_WANT="$TORCH_VERSION+$CUDA"
             TORCH_INDEX="${PGD_TORCH_INDEX_URL:-https://download.pytorch.org/whl/$CUDA}" ;;
    *) die "PGD_CUDA=$CUDA: expected cpu, a CUDA tag like cu128, or pypi" ;;
esac
TORCH_CHANGED=0
if installed torch "$TORCH_WANT"; then
    log "torch $TORCH_WANT already installed"
else
    TORCH_CHANGED=1
    log "installing $TORCH_SPEC"
    # A wheel reachable through pip's own find-links (no index) wins; otherwise torch's wheel index. --no-deps here
    # keeps the (slow, often unreachable) torch index out of resolving torch's pure-python dependencies.
    if [[ -z "$TORCH_INDEX" ]]; then
        "${PIP[@]}" install "$TORCH_SPEC"
    elif ! "${PIP[@]}" install -q --no-deps --no-index "$TORCH_SPEC" 2>/dev/null; then
        "${PIP[@]}" install --no-deps --index-url "$TORCH_INDEX" "$TORCH_SPEC"
    fi
fi
"${PIP[@]}" install -q "$TORCH_SPEC"   # torch's dependencies from the default index (torch itself is satisfied)

# --- mmcv (needs torch importable at build time, hence no build isolation) ---------------------------------------
# mmcv's compiled ops are bound to the torch build they were compiled against: a new torch means a new mmcv.
if (( ! TORCH_CHANGED )) && installed mmcv "$MMCV_VERSION" && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    WHEEL=""
    if [[ -z "${MMCV_WHEEL_DIR:-}" && -d "$ROOT/../shared/wheels" ]]; then
        MMCV_WHEEL_DIR="$(cd "$ROOT/../shared/wheels" && pwd)"
        log "mmcv wheel dir: $MMCV_WHEEL_DIR (set MMCV_WHEEL_DIR to use another)"
    fi
    if [[ -n "${MMCV_WHEEL_DIR:-}" ]]; then
        [[ -d "$MMCV_WHEEL_DIR" ]] || die "MMCV_WHEEL_DIR=$MMCV_WHEEL_DIR is not a directory"
        TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
        WHEEL="$(ls "$MMCV_WHEEL_DIR"/mmcv-"$MMCV_VERSION"-"$TAG"-*.whl 2>/dev/null | head -n1 || true)"
        [[ -n "$WHEEL" ]] || log "no mmcv-$MMCV_VERSION-$TAG wheel in $MMCV_WHEEL_DIR; building from the sdist"
    fi
    if [[ -n "$WHEEL" ]]; then
        log "installing mmcv from $WHEEL"
        "${PIP[@]}" install --force-reinstall --no-deps "$WHEEL"
        "${PIP[@]}" install -q "$WHEEL"   # its dependencies
    else
        FORCE_CUDA=0; [[ "$CUDA" == cpu ]] || FORCE_CUDA=1
        log "building mmcv $MMCV_VERSION from the sdist (MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA); this takes a while"
        "${PIP[@]}" install -q opencv-python addict yapf packaging mmengine==0.10.7 ninja
        MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" install --no-build-isolation --no-binary mmcv --no-cache-dir --force-reinstall --no-deps \
            "mmcv==$MMCV_VERSION"
        "${PIP[@]}" install -q "mmcv==$MMCV_VERSION"   # its dependencies
    fi
    "$PY" -c 'import mmcv.ops' || die "mmcv installed but its compiled ops do not import"
fi

# --- mmdet and the project ---------------------------------------------------------------------------------------
installed mmdet "$MMDET_VERSION" || "${PIP[@]}" install "mmdet==$MMDET_VERSION"
log "installing the project (editable) with test extras"
"${PIP[@]}" install -q -e "$ROOT[test]"

if [[ "${PGD_FETCH_IMAGENET:-0}" == 1 ]]; then
    log "fetching the paper profile's ImageNet backbones into torch.hub's cache"
    "$PY" - <<'EOF'
import os, torch
from pgd.config import load_profile
cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
os.makedirs(cache, exist_ok=True)
for name, bb in load_profile('paper').backbone.items():
    url = bb.init_cfg.checkpoint
    path = os.path.join(cache, os.path.basename(url))
    if os.path.exists(path):
        print(f'[setup] {name}: {path} already there')
    else:
        torch.hub.download_url_to_file(url, path)
        print(f'[setup] {name}: {path}')
EOF
fi

"$PY" - <<'EOF'
import torch, mmcv, mmcv.ops, mmdet, mmengine, pgd
print(f"[setup] ok: torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, "
      f"mmengine {mmengine.__version__}, pgd {pgd.__version__}")
EOF
