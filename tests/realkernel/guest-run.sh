#!/bin/sh
# Runs inside the real-kernel guest, as root, started by the image's /sbin/sysrq-guest-boot
# (PID 1) with this checkout mounted read-only at /srv/repo and the host's result directory
# at /srv/out. Runs the tests in two phases, writes JUnit XML, the log and the kernel log
# to /srv/out, and powers the guest off. The host (run.sh) judges the results.
#
#   phase without-esp  ESP modules refused by modprobe: the kernel truly has no ESP, as on
#                      a kernel built without it; only the tests about that case
#   phase esp          the stock kernel with ESP and xt_SYSRQ: everything else
#
# The esp phase runs the tests that need what a development host may lack (ESP, xt_SYSRQ):
# the whole tests/netns (100 s on the host) would take the better part of an hour under TCG. /srv/out/select (one line of
# pytest arguments, from SYSRQ_REALKERNEL_SELECT) replaces that selection, e.g. tests/netns.
SHARE=/srv/repo
REPO=/run/repo       # a copy in memory: 9p costs a round trip per file a process opens
OUT=/srv/out
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mountpoint -q /run || mount -t tmpfs -o mode=0755 tmpfs /run
mountpoint -q /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/netns "$REPO"
tar -C "$SHARE" --exclude=./.git --exclude=./out -cf - . | tar -C "$REPO" -xf -
hostname sysrq-realkernel
ip link set lo up
echo "guest: kernel $(uname -r), $(nproc) cpus, up $(cut -d' ' -f1 /proc/uptime) s" >"$OUT/guest.log"

phase() {   # phase NAME PYTEST-ARGS...
    name=$1; shift
    start=$(cut -d' ' -f1 /proc/uptime)
    (cd "$REPO" && python3 -m pytest -p no:cacheprovider -q -rs \
        --junitxml="$OUT/$name.xml" "$@") >"$OUT/$name.log" 2>&1
    echo "$?" >"$OUT/$name.rc"
    echo "guest: phase $name: rc $(cat "$OUT/$name.rc"), $(awk -v a="$start" '{printf "%.0f", $1 - a}' /proc/uptime) s" >>"$OUT/guest.log"
}

# A kernel without ESP: refuse the modules before anything could load them.
printf 'install esp4 /bin/false\ninstall esp6 /bin/false\n' >/etc/modprobe.d/sysrq-test-no-esp.conf
phase without-esp -m without_esp tests/netns
rm /etc/modprobe.d/sysrq-test-no-esp.conf

ESP_TESTS="tests/netns/test_esp_netns.py tests/netns/test_xfrm_netns.py::test_esp_state
tests/netns/test_xfrm_netns.py::test_deleting_a_missing_sa_says_not_found
tests/netns/test_health_netns.py::test_the_probe_is_answered_through_real_esp_and_never_reaches_sysrq
tests/netns/test_health_netns.py::test_a_probe_writes_no_kernel_log_line_with_the_real_xt_sysrq
tests/netns/test_operators_netns.py::test_a_members_h_is_confirmed_through_real_esp
tests/netns/test_fanout_netns.py::test_send_all_and_a_group_sequence_are_confirmed_through_real_esp
tests/netns/test_fanout_netns.py::test_a_sequence_goes_on_only_to_targets_whose_step_was_sent
tests/netns/test_xfrm_netns.py::test_batches_fit_the_receive_buffer
tests/netns/test_xfrm_netns.py::test_a_dropped_ack_is_an_error_for_its_request_not_a_wait"
select=$(cat "$OUT/select" 2>/dev/null || true)
# shellcheck disable=SC2086  # the selection is a list of pytest arguments
phase esp -m "not without_esp" ${select:-$ESP_TESTS}

dmesg >"$OUT/dmesg.txt"
echo "guest: done, up $(cut -d' ' -f1 /proc/uptime) s" >>"$OUT/guest.log"
sync
echo o >/proc/sysrq-trigger   # power off (works whatever kernel.sysrq says)
sleep 60
