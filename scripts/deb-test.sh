#!/usr/bin/env bash
# The Debian package as a user gets it (docs/PACKAGING.md): `cpack -G DEB` in BUILD_DIR, then
# `apt-get install ./qzfs_*.deb`, and through what it installed only: the binary, the manual
# page and the example unit are there, `mount -t fuse.qzfs` (the helper) mounts a backing
# directory, files written are stored compressed and read back after a remount, `qzfs check`
# finds nothing wrong, and `apt-get remove` takes everything away again.
#   scripts/deb-test.sh BUILD_DIR          (root; exit 77, skipped, where it cannot run)
set -euo pipefail
build=$(realpath "${1:?usage: deb-test.sh BUILD_DIR}")
[ "$(id -u)" = 0 ] || { echo "skipped: needs root (apt-get install)"; exit 77; }
for tool in apt-get dpkg-deb dpkg-shlibdeps cpack; do
  command -v "$tool" > /dev/null || { echo "skipped: $tool missing"; exit 77; }
done
if dpkg-query -W -f='${Status}' qzfs 2> /dev/null | grep -q "install ok installed"; then
  echo "skipped: a qzfs package is installed on this machine already (not replaced by a test)"
  exit 77
fi
# A qzfs installed otherwise (make install): the package would take its helper over and remove it.
if [ -e /sbin/mount.fuse.qzfs ] || [ -L /sbin/mount.fuse.qzfs ] || command -v qzfs > /dev/null; then
  echo "skipped: a qzfs is installed here outside a package ($(command -v qzfs || echo /sbin/mount.fuse.qzfs))"
  exit 77
fi
# What the package depends on must be there already: a test installs no other package.
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
dpkg-query -W -f='${Status}' fuse3 2> /dev/null | grep -q "install ok installed" || { echo "skipped: fuse3 is not installed"; exit 77; }
apt_opts=(-y -qq -o DPkg::Lock::Timeout=120)
work=$(mktemp -d /tmp/qzfs-deb.XXXXXX)
cleanup() {
  mountpoint -q "$work/m" && { umount "$work/m" || umount -l "$work/m"; }
  DEBIAN_FRONTEND=noninteractive apt-get remove "${apt_opts[@]}" qzfs > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$work/pkg" > "$work/cpack.log") || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(ls "$work"/pkg/qzfs_*.deb)
echo "package: $(basename "$deb"), $(du -k "$deb" | cut -f1) KiB"
dpkg-deb -f "$deb" Depends | grep -q fuse3 || fail "the package does not depend on fuse3"
DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$deb" > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get install"; }

[ "$(command -v qzfs)" = /usr/bin/qzfs ] || fail "qzfs is not /usr/bin/qzfs"
/usr/bin/qzfs --version | grep -q "^qzfs " || fail "qzfs --version"
[ "$(readlink /sbin/mount.fuse.qzfs)" = /usr/bin/qzfs ] || fail "/sbin/mount.fuse.qzfs does not name /usr/bin/qzfs"
ls /usr/share/man/man8/qzfs.8* > /dev/null || fail "no manual page"
zcat -f /usr/share/man/man8/qzfs.8* | grep -q '^\.SS "qzfs mount"' || fail "the manual page has no mount section"
[ -f /usr/share/doc/qzfs/examples/srv-data.mount ] || fail "no example mount unit"

mkdir "$work/b" "$work/m"
mount -t fuse.qzfs -o compression=zstd-3 "$work/b" "$work/m" || fail "mount -t fuse.qzfs"
seq 1 300000 > "$work/numbers"
cp "$work/numbers" "$work/m/numbers"
cp /usr/share/common-licenses/GPL-3 "$work/m/license"
/usr/bin/qzfs umount "$work/m" || fail "qzfs umount"
logical=$(stat -c %s "$work/numbers")
stored=$(du -k "$work/b/numbers" | cut -f1)
[ $((stored * 1024 * 2)) -lt "$logical" ] || fail "numbers stored in $stored KiB for $logical bytes: not compressed"
/usr/bin/qzfs check "$work/b" > "$work/check.log" || { cat "$work/check.log"; fail "qzfs check"; }
mount -t fuse.qzfs "$work/b" "$work/m" || fail "mount -t fuse.qzfs again"
cmp "$work/numbers" "$work/m/numbers" || fail "numbers read back differ"
cmp /usr/share/common-licenses/GPL-3 "$work/m/license" || fail "license read back differs"
umount "$work/m" || fail "umount"
for _ in $(seq 50); do mountpoint -q "$work/m" || break; sleep 0.1; done

DEBIAN_FRONTEND=noninteractive apt-get remove "${apt_opts[@]}" qzfs > "$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get remove"; }
[ ! -e /usr/bin/qzfs ] && [ ! -L /sbin/mount.fuse.qzfs ] || fail "files left after apt-get remove"
echo "deb package: installed, mounted with mount -t fuse.qzfs, wrote, read back, checked, removed"
