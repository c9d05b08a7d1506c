//! The shell scripts [`super::QemuGuest`] runs in the guest through `guest-exec` (busybox sh).
//! Arguments travel as positional parameters, never spliced into the script text, so guest
//! paths and options need no quoting.
//!
//! Exit codes the host maps to typed errors: 12 unsupported, 13 conflict, 20 no device at the
//! slot, 21 a device with another serial at the slot. Anything else non-zero is a failure.

/// Shared functions, prepended to every script.
const PRELUDE: &str = r#"
# lunledger-guest-script (a marker: see DRAIN)
die() { echo "$2" >&2; exit "$1"; }
# pause: a test hook's pause at an inner step (LL_PAUSE seconds, set only by tests).
pause() { [ -z "$LL_PAUSE" ] || sleep "$LL_PAUSE"; }
# host_of PCI: the SCSI host number of the controller at PCI address PCI.
host_of() {
    for h in /sys/class/scsi_host/host*; do
        [ -e "$h" ] || continue
        case "$(readlink -f "$h")" in */"$1"/*) echo "${h##*/host}"; return 0 ;; esac
    done
    return 1
}
# find_dev PCI LUN SERIAL TRIES: prints "H:C:T:L sdX" of the disk at target 0, LUN, checking its
# serial; waits up to TRIES x 10 ms for a hot-plug to arrive, and after ~1 s asks the adapter to
# rescan that LUN (needed when it was deleted in the guest and attached again).
find_dev() {
    i=0
    while :; do
        if h=$(host_of "$1"); then
            d=/sys/bus/scsi/devices/$h:0:0:$2
            b=$(ls "$d/block" 2>/dev/null | head -n1)
            if [ -n "$b" ]; then
                s=$(tail -c +5 "$d/vpd_pg80" 2>/dev/null | tr -d '\000 ')
                [ "$s" = "$3" ] || die 21 "device $h:0:0:$2 ($b) has serial '$s', expected '$3'"
                echo "$h:0:0:$2 $b"
                return 0
            fi
            [ "$i" = 100 ] && echo "0 0 $2" > "/sys/class/scsi_host/host$h/scan" 2>/dev/null
        fi
        i=$((i + 1))
        [ "$i" -ge "$4" ] && die 20 "no disk at PCI $1 LUN $2 after $4 tries"
        sleep 0.01
    done
}
# mounted_from PATH: the source of the top mount at PATH, if any.
mounted_from() { awk -v p="$1" '$2 == p { s = $1 } END { if (s != "") print s }' /proc/mounts; }
LINKS=/run/lunledger/links
"#;

/// Mount (or link). Args: PCI LUN SERIAL TRIES PATH PARTITION RO BLOCKDEV ENSURE FS ENCRYPTED
/// MOUNT_ID OPTIONS.
const MOUNT: &str = r#"
pci=$1 lun=$2 serial=$3 tries=$4 path=$5 part=$6 ro=$7 blockdev=$8 ensure=$9
shift 9
ok=0
fs=$1 encrypted=$2 mid=$3 opts=$4
r=$(find_dev "$pci" "$lun" "$serial" "$tries") || exit $?
blk=${r#* }
dev=/dev/$blk
[ "$part" = 0 ] || dev=/dev/$blk$part
[ -b "$dev" ] || die 22 "no block device $dev (partition $part of $blk)"
if [ "$encrypted" = 1 ]; then
    command -v cryptsetup > /dev/null || die 12 "encrypted mounts need cryptsetup in the guest"
    name=ll-crypt-$mid
    if [ ! -b "/dev/mapper/$name" ]; then
        # An ephemeral key: the data is scratch and dies with the mapping (as in hcsshim).
        cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 \
            --key-file /dev/urandom "$dev" "$name" || die 1 "cryptsetup open $dev failed"
        # Opened here: a failure from now on closes it again, or it would hold the disk
        # (unplug refuses) with nothing in the journal to close it.
        trap '[ "$ok" = 1 ] || cryptsetup close "$name" 2> /dev/null' EXIT
    fi
    dev=/dev/mapper/$name
fi
if [ "$blockdev" = 1 ]; then
    if [ -L "$path" ]; then
        [ "$(readlink "$path")" = "$dev" ] && { ok=1; exit 0; }
        die 13 "$path links to $(readlink "$path"), not $dev"
    fi
    [ -e "$path" ] && die 13 "$path exists and is not a link"
    mkdir -p "$(dirname "$path")" /run/lunledger || die 1 "cannot create $(dirname "$path")"
    pause
    echo "$path" >> "$LINKS"
    ln -s "$dev" "$path" || die 1 "cannot link $path"
    ok=1
    exit 0
fi
cur=$(mounted_from "$path")
if [ -n "$cur" ]; then
    [ "$cur" = "$dev" ] || die 13 "$path is already mounted from $cur"
    # Asked for read-only but mounted read-write is not the same mount. (The reverse is what a
    # write-protected disk gives a read-write request, so it is accepted.)
    mode=$(awk -v p="$path" '$2 == p { o = $4 } END { split(o, a, ","); print a[1] }' /proc/mounts)
    [ "$ro" = 1 ] && [ "$mode" != ro ] && die 13 "$path is mounted $mode, asked for read-only"
    ok=1
    exit 0
fi
mkdir -p "$path" || die 1 "cannot create $path"
pause
if [ "$ensure" = 1 ] && ! blkid "$dev" 2> /dev/null | grep -q 'TYPE='; then
    case "$fs" in
        "" | ext2 | ext3 | ext4)
            if command -v "mkfs.${fs:-ext4}" > /dev/null; then
                out=$("mkfs.${fs:-ext4}" -F "$dev" 2>&1)
            else
                # busybox only makes ext2, which the guest's ext4 driver mounts.
                out=$(mke2fs -F "$dev" 2>&1)
            fi ;;
        *)
            command -v "mkfs.$fs" > /dev/null || die 12 "no mkfs.$fs in the guest"
            out=$("mkfs.$fs" "$dev" 2>&1) ;;
    esac || die 1 "mkfs on $dev failed: $out"
fi
pause
o=$opts
[ "$ro" = 1 ] && o=ro${o:+,$o}
if [ -n "$o" ]; then
    out=$(mount -o "$o" "$dev" "$path" 2>&1) || die 1 "mount $dev at $path failed: $out"
else
    out=$(mount "$dev" "$path" 2>&1) || die 1 "mount $dev at $path failed: $out"
fi
ok=1
"#;

/// Unmount (or unlink). Args: PATH ENCRYPTED MOUNT_ID.
const UNMOUNT: &str = r#"
path=$1 encrypted=$2 mid=$3
if [ -L "$path" ]; then
    grep -qxF "$path" "$LINKS" 2> /dev/null || die 13 "$path is a link lunledger did not make"
    rm -f "$path" || die 1 "cannot remove $path"
    grep -vxF "$path" "$LINKS" > "$LINKS.new"; mv "$LINKS.new" "$LINKS"
else
    n=0
    while [ -n "$(mounted_from "$path")" ]; do
        out=$(umount "$path" 2>&1) || die 1 "umount $path failed: $out"
        n=$((n + 1))
        [ "$n" -ge 8 ] && die 1 "$path is still mounted after $n unmounts"
    done
    pause
    # The mount point is ours (as in hcsshim's guest); leave it if something else is inside.
    rmdir "$path" 2> /dev/null
fi
if [ "$encrypted" = 1 ] && [ -b "/dev/mapper/ll-crypt-$mid" ]; then
    cryptsetup close "ll-crypt-$mid" || die 1 "cryptsetup close ll-crypt-$mid failed"
fi
exit 0
"#;

/// Eject the disk at target 0, LUN. Args: PCI LUN.
const UNPLUG: &str = r#"
h=$(host_of "$1") || exit 0
d=/sys/bus/scsi/devices/$h:0:0:$2
[ -e "$d" ] || exit 0
b=$(ls "$d/block" 2>/dev/null | head -n1)
if [ -n "$b" ]; then
    m=$(awk -v b="/dev/$b" 'index($1, b) == 1 && substr($1, length(b) + 1) ~ /^[0-9]*$/ { print $2 }' /proc/mounts)
    # A surprise removal would leave a zombie mount: refuse, the caller must unmount first.
    [ -z "$m" ] || die 13 "/dev/$b is still mounted at $m"
    # Likewise a device-mapper device (dm-crypt) still built on it or a partition of it.
    for hd in /sys/block/$b/holders/* /sys/block/$b/$b*/holders/*; do
        [ -e "$hd" ] && die 13 "/dev/$b is still held by ${hd##*/} ($(cat "$hd/dm/name" 2>/dev/null))"
    done
fi
pause
echo 1 > "$d/delete" || die 1 "cannot delete $d"
i=0
while [ -e "$d" ]; do
    i=$((i + 1))
    [ "$i" -ge 1000 ] && die 1 "$d is still present after delete"
    sleep 0.01
done
"#;

/// Report SCSI hosts (H), disks (D), mounts (M) and our links (L), one per line.
const INSPECT: &str = r#"
for h in /sys/class/scsi_host/host*; do
    [ -e "$h" ] && echo "H ${h##*/host} $(readlink -f "$h")"
done
for d in /sys/bus/scsi/devices/*:*:*:*; do
    b=$(ls "$d/block" 2>/dev/null | head -n1)
    [ -n "$b" ] || continue
    echo "D ${d##*/} $b $(tail -c +5 "$d/vpd_pg80" 2>/dev/null | tr -d '\000 ')"
done
# device-mapper devices (our dm-crypt mappings) and the disk (or partition) under each
for m in /sys/block/dm-*; do
    [ -e "$m/dm/name" ] || continue
    echo "C /dev/mapper/$(cat "$m/dm/name") $(ls "$m/slaves" 2>/dev/null | head -n1)"
done
awk '$1 ~ /^\/dev\// { print "M", $1, $2 }' /proc/mounts
if [ -f "$LINKS" ]; then
    while read -r p; do
        [ -L "$p" ] && echo "L $(readlink "$p") $p"
    done < "$LINKS"
fi
exit 0
"#;

/// Waits until no other process in the guest runs one of our scripts (their text carries the
/// PRELUDE's marker; the pattern is assembled at run time so this script, which has no prelude,
/// does not match itself). Args: TRIES (of 20 ms). Exit 1 with the count still running when
/// they do not end in time.
const DRAIN: &str = r#"
m=lunledger-guest; m=$m-script; i=0
while :; do
    n=0
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        case "$(tr -d '\000' < "$p/cmdline" 2>/dev/null)" in *"$m"*) n=$((n + 1)) ;; esac
    done
    [ "$n" = 0 ] && exit 0
    i=$((i + 1))
    [ "$i" -ge "$1" ] && { echo "$n" >&2; exit 1; }
    sleep 0.02
done
"#;

/// The drain script (no prelude: it must not carry the marker it looks for).
pub(crate) fn drain() -> &'static str {
    DRAIN
}

/// A complete script: the prelude and one body.
fn with_prelude(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// The mount script.
pub(crate) fn mount() -> String {
    with_prelude(MOUNT)
}

/// The unmount script.
pub(crate) fn unmount() -> String {
    with_prelude(UNMOUNT)
}

/// The unplug script.
pub(crate) fn unplug() -> String {
    with_prelude(UNPLUG)
}

/// The inspect script.
pub(crate) fn inspect() -> String {
    with_prelude(INSPECT)
}
