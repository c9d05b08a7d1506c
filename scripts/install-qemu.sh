#!/bin/bash
# Installs what the QEMU test tiers need, from Debian packages. Idempotent.
#
# Everything goes in ONE apt command: installing qemu-system-x86 on its own removes a preinstalled
# qemu-utils backport (and with it qemu-img), so both are named together.
# busybox-static/qemu-guest-agent are NOT installed: scripts/build-guest.sh only `apt-get download`s
# them. The guest build needs gzip and the shared libraries qemu-ga links against, which
# qemu-system-x86 already pulls in (glib, libnuma, liburing); libudev1 is in the base system.
set -euo pipefail

PKGS="qemu-system-x86 qemu-utils e2fsprogs gzip"  # checked for presence below

missing=0
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing=1
    fi
done
if [ "$missing" = 0 ] && command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then
    echo "install-qemu: already installed: $PKGS"
    exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get update
# A newer qemu-utils (a local backport .deb) "Breaks" the distribution's qemu-system-common, and apt
# keeps the installed newer version by default. Pin qemu-utils to qemu-system-x86's candidate
# version so both come from the same QEMU release (this may downgrade qemu-img; that is intended).
QVER=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
if [ -z "$QVER" ] || [ "$QVER" = "(none)" ]; then
    echo "install-qemu: qemu-system-x86 has no apt candidate" >&2
    exit 1
fi
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --allow-downgrades \
    qemu-system-x86 "qemu-utils=$QVER" e2fsprogs gzip
qemu-system-x86_64 --version | head -n1
