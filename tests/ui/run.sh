#!/usr/bin/env bash
# The real-Blender UI tier: the artist's workflow in Blender's own UI and event loop, on
# Debian's Blender 5.2 LTS and 4.3, each in a chroot under Xvfb (software GL).
#
#   tests/ui/run.sh [blender52] [blender43]     (default: both)
#
# For each Blender: builds (or reuses) its chroot (tests/ui/chroot.sh), installs the zip
# that build.py makes with Blender's own `extension install-file`, bind-mounts the repo and
# the back end's Python read-only at the same paths (the add-on's worker runs from the
# host's venv), runs tests/ui/driver.py in Blender's UI, and fails on the driver's verdict,
# on any Python traceback or error report in Blender's output, and on files the worker left.
# Screenshots go to docs/ui/ ($CAPTALK_UI_SHOTS); logs to $CAPTALK_UI_LOGS (default a temp dir).
# Needs root (debootstrap, chroot, mount). Every mount is undone on exit, also on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/ui"
BACKEND_PYTHON="${CAPTALK_BACKEND_PYTHON:-$ROOT/.venv/bin/python}"
SHOTS="${CAPTALK_UI_SHOTS:-$ROOT/docs/ui}"
RUN_DIR=/tmp/captalk-ui-run  # inside the chroot
BLENDER_TIMEOUT="${CAPTALK_UI_TIMEOUT:-900}"  # about 100 s on an idle 2-core machine; far more when shared

log() { printf '\033[1mcaptalk-ui:\033[0m %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

MOUNTS=()   # mount points, undone in reverse order
PIDS=()     # background processes started here (Xvfb)
WORK=""

cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || log "could not unmount ${MOUNTS[i]}"
  done
  MOUNTS=()
  [ -n "$WORK" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bind_ro SRC CHROOT: SRC (a folder or a file) at the same path inside CHROOT, read-only.
bind_ro() {
  local src="$1" target="$2$1"
  if [ -d "$src" ]; then mkdir -p "$target"; else mkdir -p "$(dirname "$target")"; touch "$target"; fi
  mount --bind "$src" "$target"
  MOUNTS+=("$target")
  mount -o remount,bind,ro "$target"
}

# The folders the back end's interpreter needs: its venv and the Python it was made from.
backend_paths() {
  "$BACKEND_PYTHON" - <<'EOF'
import os, sys
paths = {os.path.realpath(sys.prefix)}
base = os.path.realpath(sys.base_prefix)
if base in ("/usr", "/usr/local"):  # a system Python: its binary and stdlib, not all of /usr
    paths |= {os.path.realpath(sys.executable), os.path.join(base, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}")}
else:
    paths.add(base)
print("\n".join(sorted(paths)))
EOF
}

prepare_inputs() {
  # Made once per run on the host: the extension zip, a FLAME-format file, a long speech.
  log "building the extension zip (build.py)"
  "$BACKEND_PYTHON" "$ROOT/build.py" --output-dir "$WORK/dist" >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log" >&2; die "build.py"; }
  ZIP="$(ls "$WORK"/dist/captalk-*.zip)"
  (cd "$ROOT" && "$BACKEND_PYTHON" "$HERE/make_inputs.py" "$WORK/inputs") || die "making the inputs"
}

run_one() {
  local name="$1" chroot_dir rc=0
  "$HERE/chroot.sh" build "$name"
  chroot_dir="$("$HERE/chroot.sh" path "$name")"
  log "$name: $(cat "$chroot_dir/.captalk-blender-version")"
  # Mounts an earlier run could not undo (it was killed with SIGKILL) go first
  local stale
  findmnt -rn -o TARGET | grep "^$chroot_dir/" | sort -r | while read -r stale; do umount -l "$stale"; done || true
  local run="$chroot_dir$RUN_DIR"
  rm -rf "$run"
  mkdir -p "$run/blender" "$run/data/heads" "$run/runtime" "$run/home" "$run/shots"
  chmod 700 "$run/runtime"
  cp -r "$WORK/inputs" "$run/inputs"
  cp "$ZIP" "$run/captalk.zip"
  cp "$OPEN_HEAD" "$run/data/heads/"

  mount -t proc proc "$chroot_dir/proc"; MOUNTS+=("$chroot_dir/proc")
  mount --bind /dev "$chroot_dir/dev"; MOUNTS+=("$chroot_dir/dev")
  mount -t devpts devpts "$chroot_dir/dev/pts" -o newinstance,ptmxmode=0666; MOUNTS+=("$chroot_dir/dev/pts")
  mount -t tmpfs tmpfs "$chroot_dir/dev/shm"; MOUNTS+=("$chroot_dir/dev/shm")
  bind_ro "$ROOT" "$chroot_dir"
  local path
  while read -r path; do
    case "$path" in "$ROOT"|"$ROOT"/*) ;; *) bind_ro "$path" "$chroot_dir" ;; esac
  done < <(backend_paths)

  # What Blender and the worker see: nothing of the host's environment but these.
  local env=(/usr/bin/env -i PATH=/usr/bin:/bin HOME="$RUN_DIR/home" LANG=C.UTF-8
    BLENDER_USER_RESOURCES="$RUN_DIR/blender" CAPTALK_DATA_DIR="$RUN_DIR/data"
    XDG_RUNTIME_DIR="$RUN_DIR/runtime" CAPTALK_BACKEND_PYTHON="$BACKEND_PYTHON"
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" LIBGL_ALWAYS_SOFTWARE=1)

  log "$name: installing the extension with Blender's extension install-file"
  chroot "$chroot_dir" "${env[@]}" blender --command extension install-file -r user_default -e "$RUN_DIR/captalk.zip" \
    >"$LOGS/$name-install.log" 2>&1 || { cat "$LOGS/$name-install.log" >&2; die "$name: extension install"; }

  # Xvfb picks a free display itself (the X socket namespace is shared with the host).
  rm -f "$chroot_dir/tmp/.X"*-lock
  mkdir -p "$chroot_dir/tmp/.X11-unix"; chmod 1777 "$chroot_dir/tmp/.X11-unix"
  local fifo="$run/display"
  chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/bin:/bin sh -c \
    "exec Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3>$RUN_DIR/display" >"$LOGS/$name-xvfb.log" 2>&1 &
  PIDS+=($!)
  local tries=0
  until [ -s "$fifo" ]; do
    sleep 0.2; tries=$((tries + 1)); [ $tries -lt 100 ] || die "$name: Xvfb did not start (see $LOGS/$name-xvfb.log)"
  done
  local display=":$(tr -d '[:space:]' <"$fifo")"

  log "$name: running the workflow in Blender's UI (display $display)"
  local start=$SECONDS
  timeout "$BLENDER_TIMEOUT" chroot "$chroot_dir" "${env[@]}" DISPLAY="$display" \
    blender --gpu-backend opengl --python "$HERE/driver.py" -- --run-dir "$RUN_DIR" \
    >"$LOGS/$name-blender.log" 2>&1 || rc=$?
  log "$name: Blender ran $((SECONDS - start)) s (exit status $rc)"

  # The worker exits once Blender has gone; what it leaves behind is checked after that.
  local waited=0
  while pgrep -f "model serve .*--session-file $RUN_DIR" >/dev/null && [ $waited -lt 30 ]; do
    sleep 0.5; waited=$((waited + 1))
  done

  mkdir -p "$SHOTS"
  # 256 colours: a third of the size, the UI loses nothing visible
  chroot "$chroot_dir" sh -c "for f in $RUN_DIR/shots/*.png; do convert \"\$f\" -colors 256 \"PNG8:\$f\"; done" || true
  for shot in "$run"/shots/*.png; do
    [ -f "$shot" ] && cp "$shot" "$SHOTS/$name-$(basename "$shot")"
  done
  "$BACKEND_PYTHON" "$HERE/verdict.py" --name "$name" --log "$LOGS/$name-blender.log" --result "$run/result.json" \
    --run-dir "$run" --exit-status "$rc" || FAILED+=("$name")

  cleanup_chroot "$chroot_dir"
}

# Undo this chroot's mounts and stop its X server before the next one.
cleanup_chroot() {
  local pid i
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=()
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
  done
  MOUNTS=()
}

main() {
  [ "$(id -u)" -eq 0 ] || die "the UI tier needs root (debootstrap, chroot and bind mounts)"
  [ -x "$BACKEND_PYTHON" ] || die "no back-end Python at $BACKEND_PYTHON: run ./captalk.sh setup first"
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=(blender52 blender43)
  WORK="$(mktemp -d /tmp/captalk-ui.XXXXXX)"
  LOGS="${CAPTALK_UI_LOGS:-$WORK/logs}"
  mkdir -p "$LOGS"
  OPEN_HEAD="${CAPTALK_UI_OPEN_HEAD:-${CAPTALK_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/captalk}/heads/open_head_v1.npz}"
  [ -f "$OPEN_HEAD" ] || (cd "$ROOT" && "$BACKEND_PYTHON" -m model build-open-head --out "$OPEN_HEAD")
  prepare_inputs
  FAILED=()
  for name in "${names[@]}"; do
    run_one "$name"
  done
  if [ ${#FAILED[@]} -gt 0 ]; then
    [ -z "${CAPTALK_UI_LOGS:-}" ] && cp -r "$LOGS" /tmp/captalk-ui-logs.last && LOGS=/tmp/captalk-ui-logs.last
    die "${FAILED[*]} (logs in $LOGS)"
  fi
  log "all passed: ${names[*]} (screenshots in $SHOTS)"
}

main "$@"; exit  # on one line: bash has read it all before it runs
