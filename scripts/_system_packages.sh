# System packages the test suite needs (sourced by scripts/test and .ci/run): a GStreamer RTSP server,
# ffmpeg, promtool (prometheus), headless Chromium and redis-server. Installs what is missing with apt
# when it can (root, or passwordless sudo); otherwise says what is missing and how to install it.
REIDD_SYSTEM_PACKAGES="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav ffmpeg prometheus chromium redis-server"
reidd_system_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "[reidd] not a Debian-like system: install by hand: $REIDD_SYSTEM_PACKAGES" >&2
    return 0
  fi
  local missing
  missing=$(for p in $REIDD_SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done)
  [ -z "$missing" ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "[reidd] missing system packages (tests that need them will fail): sudo apt-get install $missing" >&2
      return 0
    fi
  fi
  echo "[reidd] apt-get install:" $missing
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
}
