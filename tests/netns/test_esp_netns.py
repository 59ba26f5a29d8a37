"""The controller and the sender with real ESP SAs, and the real xt_SYSRQ, in throwaway
namespaces. They need a kernel with ESP (a stock Debian kernel; tests/realkernel boots one):
each asks the kernel first (conftest.py: an ESP SA added in a throwaway namespace, modprobe
xt_SYSRQ) and is skipped, saying why, only where the kernel lacks it.

The xt_SYSRQ test changes what is global to the kernel (the module's password, kernel.sysrq)
for its duration and puts both back; `h` only prints the SysRq help to the kernel log.
"""

import json
import os
import pathlib
import re
import subprocess
import uuid

import pytest
import yaml

from appliance_env import Installation, make_bundle
from sysrq_appliance import esp_keys
from sysrq_appliance.sa_sequence import RESERVE, SETTLE_MARGIN

INJECTOR = pathlib.Path(__file__).with_name("inject_failure.py")
ALGORITHM = "rfc4106(gcm(aes))"     # what `pair` writes by default


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """One pair for the module (each test copies its halves): a CLI call costs seconds
    under TCG."""
    return make_bundle(tmp_path_factory.mktemp("pair"))


def peer(installation):
    """The one peer of this installation's config, as written there."""
    return yaml.safe_load(installation.config.read_text())["peers"][0]


def spis(installation):
    """(spi_in, spi_out) of the one peer."""
    return peer(installation)["spi_in"], peer(installation)["spi_out"]


def sas(ns):
    """spi -> {key, oseq, packets} of every SA in ns, read with `ip -s xfrm state`."""
    found = {}
    for block in re.split(r"^(?=src )", ns.run("ip", "-s", "xfrm", "state").stdout, flags=re.M):
        spi = re.search(r"spi (0x[0-9a-f]+)", block)
        if spi:
            found[int(spi.group(1), 16)] = {
                "key": re.search(r"aead \S+ 0x([0-9a-f]+)", block).group(1),
                "oseq": int(re.search(r"oseq (0x[0-9a-f]+)", block).group(1), 16),
                "packets": int(re.search(r"(\d+)\(packets\)", block).group(1)),
            }
    return found


def rotate_keys(installation):
    """New ESP keys in the installation's key file (as after a new `pair`); returns them."""
    keys = esp_keys.generate(ALGORITHM)
    pathlib.Path(peer(installation)["key_file"]).write_bytes(esp_keys.render(keys, "peer", ALGORITHM))
    return keys


def key_file(installation):
    return esp_keys.load(peer(installation)["key_file"], "key_file", ALGORITHM)


def test_sas_are_added_updated_and_deleted(netns, tmp_path, bundle, esp):
    target = Installation(netns, tmp_path, "target", bundle=bundle)
    spi_in, spi_out = spis(target)
    applied = target.cli("apply", "--force", esp=True, check=True)
    assert f"add SA 10.10.25.1 -> 10.10.25.7 spi {spi_in:#010x}" in applied.stdout
    assert f"add SA 10.10.25.7 -> 10.10.25.1 spi {spi_out:#010x}" in applied.stdout
    keys = key_file(target)
    installed = sas(netns)
    assert set(installed) == {spi_in, spi_out}
    assert installed[spi_in]["key"] == keys.inbound.hex()
    assert installed[spi_out]["key"] == keys.outbound.hex()

    new = rotate_keys(target)
    updated = target.cli("apply", "--force", esp=True, check=True)
    assert f"update SA 10.10.25.1 -> 10.10.25.7 spi {spi_in:#010x}" in updated.stdout
    assert f"update SA 10.10.25.7 -> 10.10.25.1 spi {spi_out:#010x}" in updated.stdout
    installed = sas(netns)
    assert installed[spi_in]["key"] == new.inbound.hex()
    assert installed[spi_out]["key"] == new.outbound.hex()

    down = target.cli("down", esp=True, check=True)
    assert f"delete SA 10.10.25.1 -> 10.10.25.7 spi {spi_in:#010x}" in down.stdout
    assert sas(netns) == {} and netns.run("ip", "xfrm", "policy").stdout == ""


def changes(plan_output):
    """The change lines of `plan` (not its header, nor the `[#]` commands under each)."""
    return [line for line in plan_output.strip().splitlines()[1:]
            if not line.lstrip().startswith("[#]")]


def test_failed_apply_rolls_back_with_sas_present(netns, tmp_path, bundle, esp):
    """A failure after the SAs went in takes them out again; a failure while SAs of ours are
    there (new keys) leaves exactly those SAs, old keys and all."""
    target = Installation(netns, tmp_path, "target", bundle=bundle)
    before = target.snapshot()
    steps = changes(target.cli("plan", esp=True, check=True).stdout)
    assert len(steps) == 7, steps    # password, sysctl, 2 SAs, 2 policies, chain
    last = str(len(steps) - 1)
    failed = target.cli("apply", "--force", esp=True, program=(str(INJECTOR), last))
    assert failed.returncode == 1 and "the kernel is as before" in failed.stderr, failed.stderr
    after = target.snapshot()
    assert after["xfrm state"] == "" and after["xfrm policy"] == ""
    assert after["nft"] == before["nft"] and after["sysctl"] == before["sysctl"]

    target.cli("apply", "--force", esp=True, check=True)
    installed, installed_sas = target.snapshot(), sas(netns)
    rotate_keys(target)
    plan = changes(target.cli("plan", esp=True, check=True).stdout)
    assert len(plan) == 2 and all("update SA" in line for line in plan), plan
    failed = target.cli("apply", "--force", esp=True, program=(str(INJECTOR), "1"))
    assert failed.returncode == 1 and "the kernel is as before" in failed.stderr, failed.stderr
    # The first SA's update was undone: the same SAs with the old keys (an update is a
    # delete and an add, so the kernel lists them in another order).
    assert sas(netns) == installed_sas
    after = target.snapshot()
    assert {k: v for k, v in after.items() if k != "xfrm state"} == \
        {k: v for k, v in installed.items() if k != "xfrm state"}
    target.cli("down", esp=True, check=True)


def test_send_is_confirmed_through_real_esp_and_counters_continue_across_down_apply(
        linked_netns, tmp_path, bundle, esp):
    """The request goes out in ESP, the target's port-unreachable comes back in ESP. After
    the sender's `down` and `apply` its outbound SA continues from its floor
    (esp-seq.json) instead of 1, so the target's replay window takes the next request."""
    sender_ns, target_ns = linked_netns
    target = Installation(target_ns, tmp_path, "target", bundle=bundle)
    sender = Installation(sender_ns, tmp_path, "sender", bundle=bundle)
    target.cli("apply", "--force", esp=True, check=True)
    sender.cli("apply", esp=True, check=True)
    spi_in, spi_out = spis(sender)    # sender's out SA is the target's in SA
    floors = sender.state / "esp-seq.json"

    sent = sender.cli("send", "web1", "h", "--wait", "5", esp=True)
    assert sent.returncode == 0 and sent.stdout.startswith("confirmed: web1 accepted 'h'"), \
        sent.stdout + sent.stderr
    assert sas(sender_ns)[spi_out]["oseq"] == 1 and sas(sender_ns)[spi_in]["packets"] == 1
    assert sas(target_ns)[spi_out]["packets"] == 1     # it arrived in ESP
    report = json.loads(target.cli("status", "--json", esp=True, check=True).stdout)
    assert report["peers"][0]["rule"]["packets"] == 1 and report["drop_rule"]["packets"] == 0
    assert report["esp"] == "all 2 SAs present"
    assert json.loads(floors.read_text()) == {str(spi_out): RESERVE}

    down = sender.cli("down", esp=True, check=True)
    assert "remember where the deleted SAs' sequence numbers ended" in down.stdout
    assert json.loads(floors.read_text())[str(spi_out)] == 1 + SETTLE_MARGIN
    sender.cli("apply", esp=True, check=True)
    assert sas(sender_ns)[spi_out]["oseq"] == 1 + SETTLE_MARGIN
    assert json.loads(floors.read_text())[str(spi_out)] == 1 + SETTLE_MARGIN + RESERVE

    again = sender.cli("send", "web1", "h", "--wait", "5", esp=True)
    assert again.stdout.startswith("confirmed: web1 accepted 'h'"), again.stdout + again.stderr
    assert sas(sender_ns)[spi_out]["oseq"] == 2 + SETTLE_MARGIN
    assert sas(target_ns)[spi_out]["packets"] == 2
    sender.cli("down", esp=True, check=True)
    target.cli("down", esp=True, check=True)


@pytest.fixture
def module_state_kept():
    """Whatever the kernel had before: xt_SYSRQ's password (if loaded) and kernel.sysrq."""
    params = pathlib.Path("/sys/module/xt_SYSRQ/parameters")
    password = (params / "password").read_bytes().rstrip(b"\n") if params.is_dir() else None
    mask = pathlib.Path("/proc/sys/kernel/sysrq").read_text()
    yield
    pathlib.Path("/proc/sys/kernel/sysrq").write_text(mask)
    if password and params.is_dir():   # (sysfs ignores an empty write: `down` left a random one)
        fd = os.open(params / "password", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, password)
        finally:
            os.close(fd)


def kernel_log_after(marker):
    lines = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()
    index = max(i for i, line in enumerate(lines) if marker in line)
    return "\n".join(lines[index + 1:])


def test_xt_sysrq_fires_h_through_real_esp(linked_netns, tmp_path, bundle, xt_sysrq,
                                           module_state_kept):
    sender_ns, target_ns = linked_netns
    target = Installation(target_ns, tmp_path, "target", bundle=bundle, real_module=True)
    sender = Installation(sender_ns, tmp_path, "sender", bundle=bundle)
    target.cli("apply", "--force", esp=True, check=True)
    assert (target.sysfs / "password").read_bytes().rstrip(b"\n") == \
        (target.etc / "password").read_bytes()
    sender.cli("apply", esp=True, check=True)
    marker = f"sysrq-appliance test {uuid.uuid4().hex}"
    pathlib.Path("/dev/kmsg").write_text(marker + "\n")

    sent = sender.cli("send", "web1", "h", "--wait", "5", esp=True)
    assert sent.stdout.startswith("confirmed: web1 accepted 'h'"), sent.stdout + sent.stderr
    log = kernel_log_after(marker)
    assert "xt_SYSRQ: SysRq h" in log and "sysrq: HELP" in log, log

    sender.cli("down", esp=True, check=True)
    down = target.cli("down", esp=True, check=True)
    assert "restore kernel.sysrq" in down.stdout
