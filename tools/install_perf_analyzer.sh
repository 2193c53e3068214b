#!/usr/bin/env bash
# Put a working perf_analyzer at .venv/bin/perf_analyzer (tools/bootstrap.sh runs this).
#
# glibc >= 2.38 (Ubuntu 24.04, NGC images): the perf-analyzer wheel.
# Older glibc (Debian 12): that wheel does not run, so take the binary that the
# tritonclient 2.51.0 wheel ships (the server's own release), with Debian's libb64
# and pip's CUDA 12 runtime, which it links against even when it never touches a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PERF_ANALYZER_WHEEL="perf-analyzer==2.60.0"
TRITONCLIENT_WITH_BINARY="tritonclient==2.51.0"
CUDA_RUNTIME="nvidia-cuda-runtime-cu12==12.9.79"
target=.venv/bin/perf_analyzer
home=.venv/perf_analyzer

works() { "$target" --version >/dev/null 2>&1; }
if [ -x "$target" ] && works; then exit 0; fi

# No reader here may stop early (head, grep -q): under pipefail the writer's SIGPIPE (141) fails the script.
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '%s\n2.38\n' "$glibc" | sort -V | sed -n 1p)" = "2.38" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$PERF_ANALYZER_WHEEL"
  works && exit 0
  echo "install_perf_analyzer: $PERF_ANALYZER_WHEEL installed but $target does not run" >&2
  exit 1
fi

if ! ldconfig -p | grep -F 'libb64.so.0d' >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  { $sudo apt-get install -y --no-install-recommends libb64-0d >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends libb64-0d >/dev/null; }; } \
    || { echo "install_perf_analyzer: needs Debian's libb64-0d (apt-get install libb64-0d)" >&2; exit 1; }
fi
rm -rf "$home" && mkdir -p "$home"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps "$TRITONCLIENT_WITH_BINARY" -d "$home/wheel"
.venv/bin/python -m zipfile -e "$home"/wheel/tritonclient-*.whl "$home/unpacked"
mv "$home"/unpacked/tritonclient-*.data/data/bin/perf_analyzer "$home/perf_analyzer"
chmod +x "$home/perf_analyzer"
rm -rf "$home/wheel" "$home/unpacked"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target "$home/cuda" "$CUDA_RUNTIME"
cat > "$target" <<'WRAPPER'
#!/usr/bin/env bash
home="$(cd "$(dirname "$0")/../perf_analyzer" && pwd)"
export LD_LIBRARY_PATH="$home/cuda/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$home/perf_analyzer" "$@"
WRAPPER
chmod +x "$target"
works || { echo "install_perf_analyzer: $target does not run" >&2; "$target" --version >&2; exit 1; }
