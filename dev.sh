#!/usr/bin/env bash
# Set-up and entry points of gossamer on Debian 12 (README: "Set up").
#   ./dev.sh quickstart   install what is missing, build, run configs/quickstart.json
#   ./dev.sh test         install what is missing, build, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake g++ make binutils pkg-config nlohmann-json3-dev libcli11-dev libeigen3-dev zlib1g-dev libgtest-dev
          dataset-fashion-mnist python3-matplotlib python3-numpy time)

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "dev.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

build() {
  # CUDA is used where nvcc is found (/usr/local/cuda/bin or PATH); the build works without it.
  local cuda=()
  [ -x /usr/local/cuda/bin/nvcc ] && cuda=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cuda[@]}"
  cmake --build build -j"$(nproc)"
}

case "${1:-}" in
  quickstart)
    install_missing
    build
    out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
    ./build/gossamer run configs/quickstart.json --out "$out"
    ;;
  test)
    install_missing
    build
    cd build && ctest --output-on-failure -j"$(nproc)"
    ;;
  *)
    echo "usage: ./dev.sh quickstart | test" >&2
    exit 2
    ;;
esac
