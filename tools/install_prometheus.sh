#!/usr/bin/env bash
# Put Debian's prometheus binary at .venv/bin/prometheus for the monitoring tests (tools/bootstrap.sh runs this).
# The package is downloaded and unpacked, not installed: no service starts, nothing else changes.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.venv/bin/prometheus
if [ -x "$target" ] && "$target" --version >/dev/null 2>&1; then exit 0; fi
if command -v prometheus >/dev/null 2>&1; then ln -sf "$(command -v prometheus)" "$target"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_prometheus: no apt-get here; install Prometheus 2.x and put it on PATH" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
( cd "$work" && { apt-get download prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && apt-get download prometheus >/dev/null 2>&1; }; } ) \
  || { echo "install_prometheus: could not download Debian's prometheus package" >&2; exit 1; }
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/prometheus" "$target"
"$target" --version >/dev/null
