#!/bin/bash
# Builds the QEMU test guest: a Debian cloud kernel plus a small initramfs (busybox-static, the
# virtio/SCSI/sd modules and qemu-guest-agent with its shared libraries), and what a real guest
# mounts with: e2fsprogs (real ext4, not busybox's ext2), xfsprogs with the xfs module, and
# cryptsetup with the dm-crypt module (encrypted mounts).
#
#   scripts/build-guest.sh [OUTDIR]      (default: target/guest)
#
# Output: OUTDIR/vmlinuz and OUTDIR/initrd.gz. Cached: does nothing when both exist and were built
# by this version of the script (OUTDIR/build.sha256); delete them to rebuild. Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`, so nothing
# is installed on the host and /boot is never touched. qemu-ga's shared libraries are copied from
# the host, which must run the same Debian release (scripts/install-qemu.sh pulls them in).
set -euo pipefail

OUT=${1:-target/guest}
# The cache is keyed on this script's contents, so a guest built by an older version (say,
# without cryptsetup) is rebuilt rather than failing the tests that need what it lacks.
STAMP=$(sha256sum "$0" | cut -d' ' -f1)
if [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.gz" ] && [ "$(cat "$OUT/build.sha256" 2>/dev/null)" = "$STAMP" ]; then
    echo "build-guest: cached: $OUT/vmlinuz $OUT/initrd.gz"
    exit 0
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ll-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# apt downloads as the unprivileged _apt user, which must be able to reach the debs folder.
chmod 0755 "$WORK"

# The cloud flavour has ext4 and devtmpfs built in and uncompressed modules; resolve the current
# versioned image through the metapackage instead of hard-coding an ABI that security updates bump.
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
    echo "build-guest: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2
    exit 1
fi

mkdir -p "$WORK/debs"
# apt drops privileges to _apt for downloads; let it write here to avoid a noisy warning.
chmod 0777 "$WORK/debs"
# Filesystem and encryption tools, plus the libraries of theirs the host may lack (the rest are
# the host's, which runs the same Debian release).
EXTRA_PKGS="e2fsprogs xfsprogs cryptsetup-bin libpopt0 libinih1 liburcu8"
# shellcheck disable=SC2086
(cd "$WORK/debs" && apt-get download "$KPKG" busybox-static qemu-guest-agent $EXTRA_PKGS)
for pkg in "kernel:$KPKG" busybox:busybox-static qga:qemu-guest-agent e2fs:e2fsprogs \
    xfs:xfsprogs cs:cryptsetup-bin popt:libpopt0 inih:libinih1 urcu:liburcu8; do
    dir=${pkg%%:*}
    mkdir -p "$WORK/$dir"
    dpkg-deb -x "$(ls "$WORK"/debs/"${pkg#*:}"_*.deb | head -n1)" "$WORK/$dir"
done
BB=$WORK/busybox/bin/busybox
KV=$(ls "$WORK/kernel/lib/modules")
MODDIR=$WORK/kernel/lib/modules/$KV
# kmod is not necessarily on the host; busybox's depmod writes the modules.dep we need.
"$BB" depmod -b "$WORK/kernel" "$KV"

R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,run,mnt,etc,lib/modules,usr/sbin}
cp "$BB" "$R/bin/busybox"

# Modules plus their dependencies, dependencies first, so /init can insmod them in file order.
: > "$R/lib/modules/order"
add_module() {
    local rel=$1 dep name
    name=$(basename "$rel" .ko)
    if grep -qx "$name" "$R/lib/modules/order"; then return 0; fi
    for dep in $(grep -E "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2-); do
        add_module "$dep"
    done
    cp "$MODDIR/$rel" "$R/lib/modules/"
    echo "$name" >> "$R/lib/modules/order"
}
# dm-crypt with xts over ecb (aes itself is built in, aesni is useless under TCG's CPU model;
# there is no modprobe for the kernel to load them on demand), and xfs.
for m in virtio_pci virtio_scsi sd_mod virtio_console dm-crypt ecb xts xfs; do
    rel=$(grep -oE "^kernel/[^:]*/$m\.ko" "$MODDIR/modules.dep" || true)
    if [ -z "$rel" ]; then
        echo "build-guest: module $m not found in $KPKG" >&2
        exit 1
    fi
    add_module "$rel"
done

cp "$WORK/qga/usr/sbin/qemu-ga" "$R/usr/sbin/qemu-ga"
if ldd "$R/usr/sbin/qemu-ga" | grep -q 'not found'; then
    echo "build-guest: qemu-ga needs libraries the host lacks:" >&2
    ldd "$R/usr/sbin/qemu-ga" | grep 'not found' >&2
    exit 1
fi
for lib in $(ldd "$R/usr/sbin/qemu-ga" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done

# The tools go in /usr/sbin, ahead of busybox's applets in PATH. Libraries the host lacks come
# from the downloaded packages (resolved through LD_LIBRARY_PATH for ldd).
EXTRA_LIBS=$(find "$WORK/popt" "$WORK/inih" "$WORK/urcu" -name '*.so*' -printf '%h\n' | sort -u | tr '\n' :)
for tool in e2fs/sbin/mke2fs xfs/sbin/mkfs.xfs cs/sbin/cryptsetup; do
    cp -L "$WORK/$tool" "$R/usr/sbin/"
    if LD_LIBRARY_PATH=$EXTRA_LIBS ldd "$WORK/$tool" | grep -q 'not found'; then
        echo "build-guest: $tool needs libraries neither the host nor the extra packages have:" >&2
        LD_LIBRARY_PATH=$EXTRA_LIBS ldd "$WORK/$tool" | grep 'not found' >&2
        exit 1
    fi
    for lib in $(LD_LIBRARY_PATH=$EXTRA_LIBS ldd "$WORK/$tool" | grep -oE '/[^ ]+\.so[^ ]*'); do
        case "$lib" in
            "$WORK"/*) dest=/usr/lib/x86_64-linux-gnu/$(basename "$lib") ;;
            *) dest=$lib ;;
        esac
        mkdir -p "$R$(dirname "$dest")"
        [ -e "$R$dest" ] || cp -L "$lib" "$R$dest"
    done
done
for fs in ext2 ext3 ext4; do ln -sf mke2fs "$R/usr/sbin/mkfs.$fs"; done
cp "$WORK/e2fs/etc/mke2fs.conf" "$R/etc/mke2fs.conf"

cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
# The real e2fsprogs/xfsprogs/cryptsetup in /usr/sbin win over busybox's applets.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/cryptsetup
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
# No udev: cryptsetup/libdevmapper create /dev/mapper nodes themselves, told so here.
export DM_DISABLE_UDEV=1
# No udev: find the agent's port by its name in sysfs rather than /dev/virtio-ports/.
port=
for i in $(seq 100); do
    for p in /sys/class/virtio-ports/*; do
        [ -f "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    sleep 0.1
done
echo "lunledger-guest: agent port=$port uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
# Restart the agent if it dies, so one crash does not strand a whole test run.
while true; do
    /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run
    sleep 0.5
done
INIT
chmod +x "$R/init"

cp "$WORK/kernel/boot/vmlinuz-$KV" "$WORK/vmlinuz"
(cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) > "$WORK/initrd.gz"
# Move into place last so an interrupted build never looks cached.
mv "$WORK/vmlinuz" "$OUT/vmlinuz.tmp" && mv "$WORK/initrd.gz" "$OUT/initrd.gz.tmp"
mv "$OUT/initrd.gz.tmp" "$OUT/initrd.gz" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
echo "$STAMP" > "$OUT/build.sha256"
echo "build-guest: kernel $KV ($KPKG); modules: $(tr '\n' ' ' < "$R/lib/modules/order")"
ls -la "$OUT"
