#!/usr/bin/env bash
# Set up a fresh machine for Carnet: system packages (tesseract with French data,
# fonts for the synthetic scans), a virtualenv and the package with its extras.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
if command -v tesseract >/dev/null 2>&1 && ! tesseract --list-langs 2>/dev/null | grep -qx fra; then
  need_apt+=(tesseract-ocr-fra)
elif ! command -v tesseract >/dev/null 2>&1; then
  need_apt+=(tesseract-ocr-fra)
fi
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# The page's browser test drives Debian's Chromium through its driver.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.carnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Carnet and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[airflow,postgres,dev,demo]"
  touch "$stamp"
fi
