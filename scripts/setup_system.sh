#!/usr/bin/env bash
# Install the Debian packages talkinghead needs, only those missing. Idempotent; safe to run on every `make`.
#   Mesa EGL (headless OpenGL rendering on CPU): libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libgl1
#   espeak-ng, flite: offline TTS voices for the embedded demo presenter, speak --text and generated test data
#   chromium, chromium-driver: the headless browser the app's page is tested in (tests/test_app.py)
set -euo pipefail
packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libgl1 espeak-ng flite chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
  echo "setup: error: missing Debian packages ${missing[*]} and no root rights to install them." >&2
  echo "setup: run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q "${missing[@]}" >/tmp/talkinghead-apt.log 2>&1; then
  $sudo apt-get update -q >/tmp/talkinghead-apt-update.log 2>&1 || true
  if ! $sudo apt-get install -y -q "${missing[@]}" >>/tmp/talkinghead-apt.log 2>&1; then
    echo "setup: error: apt-get could not install ${missing[*]} (log: /tmp/talkinghead-apt.log)" >&2
    exit 1
  fi
fi
