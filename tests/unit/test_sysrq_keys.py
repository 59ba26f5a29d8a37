from sysrq_appliance import sysrq


def test_mask_for_allow_names():
    assert sysrq.mask_for(["sync", "remount", "reboot"]) == 0xB0
    assert sysrq.mask_for(["all"]) == 1
    assert sysrq.mask_for(["dump", "signal"]) == 0x48


def test_names_round_trip():
    assert sysrq.names_for(0xB0) == ["sync", "remount", "reboot"]
    assert sysrq.names_for(1) == ["all"]
    assert sysrq.names_for(0) == []


def test_key_allowed_follows_kernel_enable_masks():
    mask = sysrq.mask_for(["sync", "remount", "reboot"])
    assert all(sysrq.key_allowed(k, mask) for k in "subo")
    assert sysrq.key_allowed("h", mask)          # help needs no bit
    assert not sysrq.key_allowed("t", mask)      # dump
    assert not sysrq.key_allowed("j", mask)      # thaw is a "signal" operation
    assert not sysrq.key_allowed("q", mask)      # no bit of its own: only with all
    assert sysrq.key_allowed("q", 1)
    assert not sysrq.key_allowed("h", 0)         # SysRq off: nothing at all
