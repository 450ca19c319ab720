#!/usr/bin/env bash
# Installs what qzfs needs to build and test on Debian 12 (bookworm). Safe to run again.
set -euo pipefail
pkgs=(build-essential dpkg-dev cmake ninja-build pkg-config clang libclang-rt-14-dev
      libfuse3-dev fuse3 procps libisal-dev libdeflate-dev libzstd-dev liblz4-dev libxxhash-dev zlib1g-dev
      libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      gzip zstd xz-utils python3 valgrind fio
      acl rsync e2fsprogs glusterfs-server glusterfs-client iproute2 util-linux
      sway-backgrounds)  # PNG images: already-compressed test data from a Debian package
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the system-wide glusterd on the host's network when it installs it; the tests
  # run their own inside a private network namespace (scripts/cluster.sh), so a glusterd this
  # script brought in is stopped and disabled. One installed before is left alone.
  if [[ " ${missing[*]} " == *" glusterfs-server "* ]] && [ -d /run/systemd/system ]; then
    echo "setup: disabling the system glusterd.service (scripts/cluster.sh runs its own)"
    $SUDO systemctl disable --now glusterd.service >/dev/null 2>&1 || true
  fi
fi
