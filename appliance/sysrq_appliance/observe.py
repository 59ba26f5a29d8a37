"""Read what of ours the kernel and the host hold: one dump per xfrm kind, one save per
table, a few sysfs/procfs files. The result is a plain value, so `diff`, `status` and
`doctor` can be tested on recorded observations without root.
"""

import secrets
from dataclasses import dataclass, field

from sysrq_appliance import password, system, xfrm

FAMILIES = (4, 6)


@dataclass(frozen=True)
class Observed:
    states: tuple                    # ((State, StateCounters), ...) of ours
    policies: tuple                  # (Policy, ...) of ours
    chains: dict                     # family -> ObservedChain | None
    module_loaded: bool
    kernel_password: bytes | None = field(repr=False)
    sysrq_mask: int | None
    module_hash: str | None = None   # as the loaded module says (None: not loaded/unknown)
    saved_sysrq: int | None = None   # kernel.sysrq before our first change, if we made one
    # The kernel's password is the one in our password file (down scrubs only ours).
    our_password_loaded: bool = False


def ours(states, policies):
    """Keep the SAs and policies whose reqid is ours."""
    return (tuple((s, c) for s, c in states if xfrm.is_ours(s.reqid)),
            tuple(p for p in policies if p.template is not None
                  and xfrm.is_ours(p.template.reqid)))


def observe(paths, sock, backend, our_password=None):
    """The actual state. `our_password`: the stored password, to tell whether the one in
    the kernel is ours (None: unknown, then it is not)."""
    states, policies = ours(sock.dump_states(), sock.dump_policies())
    loaded = system.module_loaded(paths)
    kernel_password = None
    if loaded:
        try:
            kernel_password = password.read_kernel_password(paths.sysfs_dir)
        except OSError:
            kernel_password = None
    return Observed(states, policies, {f: backend.observe(f) for f in FAMILIES}, loaded,
                    kernel_password, system.read_sysrq(paths),
                    module_hash=system.module_hash(paths) if loaded else None,
                    saved_sysrq=system.saved_sysrq(paths),
                    our_password_loaded=bool(kernel_password and our_password
                                             and secrets.compare_digest(our_password,
                                                                        kernel_password)))
