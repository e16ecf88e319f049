#!/usr/bin/env bash
# Debian chroots with a real Blender (with its UI) for the UI test tier.
#
#   tests/ui/chroot.sh build NAME     build the chroot NAME (blender52 | blender43) unless cached
#   tests/ui/chroot.sh path NAME      print its folder
#
# Each chroot lives in $CAPTALK_UI_CACHE (default /var/cache/captalk-ui), outside the repo,
# with a stamp of what was installed: a second build with the same stamp returns at once.
# Needs root (debootstrap, chroot) and about 1.5 GB of disk per chroot.
set -euo pipefail

CACHE="${CAPTALK_UI_CACHE:-/var/cache/captalk-ui}"
MIRROR="${CAPTALK_UI_MIRROR:-http://deb.debian.org/debian}"
# What runs inside: Blender, a virtual X server, real input events, screenshots. Debian's
# blender does not pull in numpy, and 5.2 cannot register its extensions add-on without cattr
# and requests. Tesseract reads the panel off screenshots (is any label cut, where is a button).
PACKAGES=(blender xvfb xauth xdotool imagemagick python3-numpy python3-cattr python3-requests
  tesseract-ocr tesseract-ocr-eng)

suite_of() {
  case "$1" in
    blender52) echo sid ;;      # Blender 5.2 LTS
    blender43) echo trixie ;;   # Blender 4.3
    *) echo "unknown chroot '$1' (blender52 or blender43)" >&2; exit 2 ;;
  esac
}

log() { printf '\033[1mcaptalk-ui:\033[0m %s\n' "$*" >&2; }

# apt_install DIR NAME: install PACKAGES into the chroot DIR (with /proc mounted meanwhile).
apt_install() {
  local dir="$1" name="$2"
  mount -t proc proc "$dir/proc"
  trap "umount '$dir/proc' 2>/dev/null || true" EXIT
  log "installing ${PACKAGES[*]} in $name"
  chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${PACKAGES[*]} && apt-get clean" \
    >"$CACHE/$name.apt.log" 2>&1 || { tail -20 "$CACHE/$name.apt.log" >&2; exit 1; }
  umount "$dir/proc"
  trap - EXIT
}

build() {
  local name="$1" suite dir want
  suite="$(suite_of "$name")"
  dir="$CACHE/$name"
  want="$suite ${PACKAGES[*]}"
  if [ -f "$dir/.captalk-stamp" ] && [ "$(cat "$dir/.captalk-stamp")" = "$want" ]; then
    return
  fi
  if [ -f "$dir/.captalk-stamp" ] && [ "$(cut -d' ' -f1 "$dir/.captalk-stamp")" = "$suite" ]; then
    # Same Debian suite, other packages: install them into the chroot we have.
    log "updating the packages of $name"
    apt_install "$dir" "$name"
    echo "$want" >"$dir/.captalk-stamp"
    return
  fi
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  }
  # A half-built chroot is thrown away, never reused.
  rm -rf "$dir.partial"
  mkdir -p "$CACHE"
  log "debootstrap $suite into $dir (one time, a few minutes)"
  debootstrap --variant=minbase "$suite" "$dir.partial" "$MIRROR" >"$CACHE/$name.debootstrap.log" 2>&1 || {
    tail -20 "$CACHE/$name.debootstrap.log" >&2; exit 1; }
  # sid's Release file can be past its Valid-Until date.
  echo 'Acquire::Check-Valid-Until "false";' >"$dir.partial/etc/apt/apt.conf.d/99captalk"
  apt_install "$dir.partial" "$name"
  chroot "$dir.partial" blender --version | head -1 >"$dir.partial/.captalk-blender-version"
  echo "$want" >"$dir.partial/.captalk-stamp"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  log "$name ready: $(cat "$dir/.captalk-blender-version")"
}

main() {
  case "${1:-}" in
    build) build "$2" ;;
    path) suite_of "$2" >/dev/null; echo "$CACHE/$2" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"; exit  # on one line: bash has read it all before it runs, so editing this file mid-run is safe
