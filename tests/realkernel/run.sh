#!/bin/bash
# The real-kernel tier: boot Debian 13's own kernel and root once under QEMU and run
# tests/unit and tests/netns inside it, as root, with real ESP and the real xt_SYSRQ.
#
#   tests/realkernel/run.sh                      (as root; `make realkernel`)
#   SYSRQ_REALKERNEL_SELECT='tests/netns/test_realkernel_netns.py' tests/realkernel/run.sh
#
# The guest has no NIC at all (-nic none): every packet of the tests stays inside network
# namespaces in the guest. The checkout is shared read-only (9p); the root image is booted
# with snapshot=on, so each run starts from the cached image (build-image.sh) and leaves it
# untouched. QEMU runs with TCG (no KVM here), is killed by its PID after $TIMEOUT seconds,
# and the run fails if any test fails, errs or is skipped (judge.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/../vagrant/lib.sh"    # log, die, now, need_root
need_root
TIMEOUT=${SYSRQ_REALKERNEL_TIMEOUT:-900}

T0=$(now)
IMAGE=$("$HERE/build-image.sh")
T1=$(now)
RUN=$(mktemp -d /var/tmp/sysrq-realkernel-run.XXXXXX)
mkdir "$RUN/out"
[ -z "${SYSRQ_REALKERNEL_SELECT:-}" ] || echo "$SYSRQ_REALKERNEL_SELECT" >"$RUN/out/select"

QEMU=(qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu qemu64 -smp 1 -m 1536
      -nodefaults -display none -no-reboot -nic none
      -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img"
      -append "console=ttyS0 root=/dev/vda rw init=/sbin/sysrq-guest-boot panic=-1 quiet"
      -drive "file=$IMAGE/root.ext4,format=raw,if=virtio,snapshot=on,cache=unsafe"
      -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on"
      -virtfs "local,path=$RUN/out,mount_tag=out,security_model=none"
      -serial "file:$RUN/console.log")
log "booting $IMAGE (run directory $RUN)"
"${QEMU[@]}" >"$RUN/qemu.log" 2>&1 &
QPID=$!
trap 'kill "$QPID" 2>/dev/null || true' EXIT   # our QEMU only, by its PID
waited=0
while kill -0 "$QPID" 2>/dev/null; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
        log "no power-off after $TIMEOUT s; stopping QEMU (pid $QPID)"
        kill "$QPID"
        break
    fi
    sleep 1
    waited=$((waited + 1))
done
wait "$QPID" 2>/dev/null || true
trap - EXIT
T2=$(now)
cat "$RUN/out/guest.log" >&2 2>/dev/null || true
log "TIME image $((T1 - T0)) s, guest boot+tests+power-off $((T2 - T1)) s, total $((T2 - T0)) s"
if ! /usr/bin/python3 "$HERE/judge.py" "$RUN/out"; then
    log "FAILED; logs: $RUN/out/*.log, kernel log: $RUN/out/dmesg.txt, console: $RUN/console.log"
    exit 1
fi
rm -rf "$RUN"
