"""sysrq-appliance: the command line. Thin: parse, call one module, print, exit 0/1/2."""

import argparse
import errno
import os
import re
import signal
import sys
import time
import traceback

from sysrq_appliance import __version__, config, lock, opsocket, sequences
from sysrq_appliance.errors import ApplianceError, InputError, excerpt
from sysrq_appliance.password import SYSFS_PARAMETERS
from sysrq_appliance.seqno import DEFAULT_STATE_DIR, MAX_CHOSEN

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT, EXIT_NOT_CONFIRMED = 0, 1, 2, 3

DESCRIPTION = """\
Fire a magic SysRq key on a hung server through an IPsec ESP tunnel (xt_SYSRQ).
The same program runs on both ends; 'role:' in the config says which end this is."""

EPILOG = """\
examples:
  sysrq-appliance pair --target web1=10.10.25.7 --sender admin1=10.10.25.1 --out ./bundle
  sysrq-appliance apply                 # on both hosts, after copying each half
  sysrq-appliance send web1 s           # on the sender: emergency sync on web1
exit codes: 0 ok, 1 runtime failure, 2 bad input (nothing was changed),
  3 sent but not confirmed (send, for keys that can confirm) or a target down (check),
  4 the kernel differs from the config (status)"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2, and no abbreviated options (`--f`
    must never mean --force)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        sys.stderr.write(self.usage_line(message) + "\n")
        sys.exit(EXIT_INPUT)

    def usage_line(self, message):
        # argparse quotes what it did not understand: escape control characters (a
        # newline in an argument must not make a second line) and keep it short.
        message = _quoted_choices(message)
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        if len(message) > 300:
            message = message[:297] + "..."
        return f"{self.prog}: error: {message} (see '{self.prog} --help')"


class _Usage(Exception):
    """A usage error of the operators' parser, as the line the CLI would print."""


class _OperatorParser(_Parser):
    """`send`'s arguments as the helper takes them from an operator: the same definitions
    and messages as the CLI's, no --help, and nothing but TARGET (or --group, --all), KEYS,
    --sequence, --count and --wait (no --dry-run, --seqno or --salt: they would hand out requests built with
    the password, or move the sequence numbers)."""

    def __init__(self):
        super().__init__(prog="sysrq-appliance send", add_help=False)
        _send_arguments(self, operator=True)

    def error(self, message):
        raise _Usage(self.usage_line(message))


def _quoted_choices(message):
    """"(choose from a, b)" as "(choose from 'a', 'b')": Python versions differ in
    quoting the choices, and a reader (or a script) should see one message."""
    head, sep, rest = message.partition("(choose from ")
    if not sep or not rest.endswith(")"):
        return message
    choices = [c[1:-1] if c[:1] == c[-1:] == "'" else c for c in rest[:-1].split(", ")]
    return head + sep + ", ".join(f"'{c}'" for c in choices) + ")"


def _path(text):
    """A path option: no NUL, newline or other control character (argparse type)."""
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError("not a usable path (empty, or holds a control "
                                         "character)")
    return text


def _target_name(text):
    """--firewall-target: an iptables target name, checked before anything is touched."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,28}", text):
        raise argparse.ArgumentTypeError(f"{excerpt(text)} is not an iptables target name")
    return text


def _whole(low, high):
    """A whole-number option in decimal digits only (argparse type): not 1_000, not ١٢."""
    def parse(text):
        if not re.fullmatch(r"[0-9]{1,20}", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{excerpt(text)} is not a whole number from "
                                             f"{low} to {high}")
        return int(text)
    return parse


def _seconds(high):
    def parse(text):
        if not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", text) or float(text) > high:
            raise argparse.ArgumentTypeError(f"{excerpt(text)} is not a number of seconds "
                                             f"from 0 to {high}")
        return float(text)
    return parse


def _sub(subparsers, name, help_text, example, description=None):
    return subparsers.add_parser(
        name, help=help_text, description=description or help_text,
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser():
    parser = _Parser(prog="sysrq-appliance", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", default=config.DEFAULT_PATH, metavar="PATH", type=_path,
                        help="config file (default: %(default)s)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR", type=_path,
                        help="where sequence numbers and saved settings live "
                             "(default: %(default)s)")
    parser.add_argument("--sysfs-dir", default=SYSFS_PARAMETERS, metavar="DIR", type=_path,
                        help="xt_SYSRQ's parameter directory (default: %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print the Python traceback too")
    testing = parser.add_argument_group(
        "for testing on hosts without the real thing (never needed in production)")
    testing.add_argument("--sysctl-path", default="/proc/sys/kernel/sysrq", metavar="PATH",
                         type=_path,
                         help="the kernel.sysrq file (default: %(default)s)")
    testing.add_argument("--firewall-target", default="SYSRQ", metavar="TARGET",
                         type=_target_name,
                         help="iptables target of the peer rules (default: %(default)s)")
    testing.add_argument("--without-esp", action="store_true",
                         help="program policies and rules but no SAs (kernels without ESP)")
    testing.add_argument("--helper-socket", default=opsocket.DEFAULT_PATH, metavar="PATH",
                         type=_path, help="where the operators' helper listens "
                                          "(default: %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = _sub(sub, "apply", "make the kernel match the config (idempotent)",
             "sysrq-appliance apply",
             "Program the ESP SAs and policies, the SYSRQ firewall chain, the password and "
             "kernel.sysrq\nso they match the config. Changes only what differs; on any "
             "failure undoes this run's changes.")
    p.add_argument("--force", action="store_true",
                   help="install the SYSRQ rule even when 'doctor' FAILs (e.g. xtables-addons "
                        "< 3.26, whose xt_SYSRQ panics the kernel on the first request)")
    p.set_defaults(func=_kernel_verb("apply"))
    p = _sub(sub, "down", "remove everything this program installed",
             "sysrq-appliance down",
             "Remove our SAs, policies, firewall chain and password; restore kernel.sysrq.")
    p.set_defaults(func=_kernel_verb("down"))
    p = _sub(sub, "status", "show what is installed and its counters",
             "sysrq-appliance status --json",
             "Show what of ours the kernel holds, its counters, and how it differs from the "
             "config.\n\n--metrics writes Prometheus' text format for node_exporter's "
             "textfile collector\n(atomically): sysrq_appliance_in_sync, _status_timestamp_seconds, and on a "
             "target\nsysrq_appliance_target_armed and _target_armed_part{part=module|"
             "password|chain|tunnel}.\nsysrq-appliance-reapply.service writes them after "
             "each re-apply where\n/var/lib/prometheus/node-exporter exists.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--metrics", metavar="PATH", type=_path,
                   help="also write the result to PATH (*.prom) for node_exporter")
    p.add_argument("--quiet", action="store_true", help="print nothing (for the timer)")
    p.set_defaults(func=_kernel_verb("status"))
    p = _sub(sub, "plan", "print what 'apply' would change, change nothing",
             "sysrq-appliance plan")
    p.set_defaults(func=_kernel_verb("plan"))
    p = _sub(sub, "doctor", "check this host can run the appliance safely",
             "sysrq-appliance doctor",
             "One PASS/WARN/FAIL line per check; each FAIL says how to fix it.")
    p.set_defaults(func=_kernel_verb("doctor"))

    p = _sub(sub, "pair", "generate configs, keys and password for one sender-target pair",
             "sysrq-appliance pair --target web1=10.10.25.7 --sender admin1=10.10.25.1 "
             "--out ./bundle",
             "Write OUT/target/ and OUT/sender/: each is the content of /etc/sysrq-appliance "
             "on that host\n(config, ESP keys, SysRq password; files 0600, directories 0700).")
    p.add_argument("--target", required=True, metavar="NAME=ADDR", help="the server to rescue")
    p.add_argument("--sender", required=True, metavar="NAME=ADDR", help="the admin host")
    p.add_argument("--out", required=True, metavar="DIR", type=_path,
                   help="where to write the bundle: a new directory, or an existing one that "
                        "is yours and 0700 (it will hold secrets)")
    p.add_argument("--algorithm", default=config.DEFAULT_ALGORITHM,
                   choices=tuple(config.ALGORITHMS), metavar="ALGORITHM",
                   # Python 3.11's usage wrapper mangles choices with parentheses: name them here.
                   help="ESP algorithm: " + " or ".join(config.ALGORITHMS)
                   + " (default: %(default)s)")
    p.add_argument("--port", type=_whole(1, 65535), default=9,
                   help="UDP port of the trigger (default: 9)")
    p.add_argument("--etc-dir", default="/etc/sysrq-appliance", metavar="DIR", type=_path,
                   help="where the halves will live on the hosts (default: %(default)s)")
    p.add_argument("--allow", default="sync,remount,reboot", metavar="NAMES",
                   help="SysRq functions the target allows, comma-separated "
                        "(default: %(default)s; see the README for the names)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle")
    p.set_defaults(func=_pair)

    p = _sub(sub, "fleet", "render every host's half from a fleet inventory",
             "sysrq-appliance fleet render fleet.yaml --out /root/fleet")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    fsub.required = True
    q = _sub(fsub, "render", "write every host's half of the fleet into a directory "
             "(idempotent)",
             "sysrq-appliance fleet render fleet.yaml --out /root/fleet",
             "Write OUT/HOST/ for every admin host and target in INVENTORY: each is the "
             "content of\n/etc/sysrq-appliance on that host (files 0600, directories 0700). "
             "Run it again after\nediting the inventory: keys, SPIs and passwords already in "
             "OUT are kept, a file is\nrewritten only when its content changes, and the files "
             "of hosts no longer listed are\nremoved (only files this command wrote, listed in "
             "OUT/.manifest). Every admin host\ngets its own tunnel to every target and a copy "
             "of each target's password.\n\n"
             "inventory format (YAML):\n"
             "  admins:  [{name: admin1, address: 10.10.25.1}, ...]\n"
             "  targets: [{name: web1, address: 10.10.25.7, allow: [sync, remount, reboot]}, "
             "...]\n"
             "  groups:  {web: [web1, web2]}          # optional: send --group web\n"
             "  sysrq:   {port: 9, allow: [...]}      # optional: defaults for every target\n"
             "  ipsec:   {algorithm: rfc4106(gcm(aes))}\n"
             "  etc_dir: /etc/sysrq-appliance         # where the halves live on the hosts")
    q.add_argument("inventory", metavar="INVENTORY", type=_path, help="the inventory file")
    q.add_argument("--out", required=True, metavar="DIR", type=_path,
                   help="where the halves live: a new directory, or one this command wrote "
                        "before (yours, 0700: it holds secrets)")
    q.set_defaults(func=_fleet_render)

    p = _sub(sub, "password", "set or rotate the SysRq password",
             "sysrq-appliance password rotate")
    psub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    psub.required = True
    q = _sub(psub, "set", "store a password read from a file or stdin (never from argv)",
             "printf '%s' \"$NEW\" | sysrq-appliance password set",
             "Store a new SysRq password. It is read from --file or stdin, never from the "
             "command line\n(argv is visible to every user). On a target it is also handed to "
             "xt_SYSRQ if loaded;\non a sender it is stored for --peer.")
    q.add_argument("--file", metavar="PATH", type=_path,
                   help="read the password from PATH, a regular file (default: stdin)")
    q.add_argument("--peer", metavar="NAME", help="sender: the target this password is for")
    q.set_defaults(func=_password_set)
    q = _sub(psub, "rotate", "generate, store and activate a new password (target)",
             "sysrq-appliance password rotate",
             "Generate a new random password, store it and hand it to xt_SYSRQ if loaded.\n"
             "Prints which file to copy to the senders; never the password itself.")
    q.add_argument("--length", type=_whole(1, 63), default=32,
                   help="characters (default: 32, max 63)")
    q.set_defaults(func=_password_rotate)

    p = _sub(sub, "send", "send SysRq keys to a target through the tunnel (sender)",
             "sysrq-appliance send web1 s\n"
             "  sysrq-appliance send --group web --sequence thaw",
             "Build an authenticated xt_SYSRQ request and send it over UDP from this host's\n"
             "tunnel address, so the outbound IPsec policy encrypts it. 'confirmed' means the\n"
             "target accepted it (its ICMP port-unreachable answer came back through the "
             "tunnel).\n"
             "Keys 'b' (reboot), 'o' (power off) and 'c' (crash) cannot confirm: the machine "
             "is gone\nbefore it can answer.\n\n"
             "common keys: s sync, u remount read-only, b reboot, o power off, "
             "j thaw filesystems,\n  w blocked tasks, t all tasks, m memory, h help "
             "(the target's kernel.sysrq mask applies)\n\n"
             "sequences (--sequence NAME; override or add your own under 'sequences:' in the "
             "config):\n" + "\n".join(f"  {name:14} {text}" for name, text in
                                        sequences.HELP.items()) +
             "\n  a sequence is refused before anything is sent if a step needs a function "
             "the\n  target does not allow (the peer's 'allow:' list in this config)\n\n"
             "The request only ever leaves through this host's ESP SA to the target: without "
             "it\n(no 'apply' here, or the SA removed) the kernel refuses to send it in "
             "plaintext (exit 1).\n\n"
             "Run by a user other than root (a member of group sysrq-operators), send goes "
             "through\nthe operators' helper (sysrq-appliance-helper.socket), which sends as "
             "root and answers\nwith the same lines (--dry-run, --seqno, --salt and --config "
             "still run here, as before).\nEvery request is one journal entry: journalctl _UID=0 "
             "-t sysrq-appliance-audit\n\n"
             "Several targets (web1,web2, --group NAME, --all): one process sends each step "
             "to all of\nthem before it waits, prints one line per target as its answer "
             "arrives, then a summary.\n\n"
             "exit codes: 0 every request confirmed (or sent, for b/o/c, which cannot "
             "confirm),\n  1 not sent (no SA, network error; to several targets: to none of "
             "them),\n  2 bad input, nothing sent,\n"
             "  3 sent but not confirmed (wrong password, replay, tunnel down, key masked; to "
             "several\n    targets: some target not confirmed or not sent)")
    _send_arguments(p)
    p.set_defaults(func=_send)

    p = _sub(sub, "check", "prove each target's rescue path is armed, without firing it "
             "(sender)", "sysrq-appliance check --all",
             "Send each target a probe (an empty UDP datagram) through the tunnel, as a request "
             "goes.\nThe target's chain answers it, ahead of the SYSRQ rule, with ICMP "
             "port-unreachable,\nwhich comes back through the tunnel: 'up' proves the SAs and "
             "policies on both ends,\nthe target's chain, its jump and the policy match. No "
             "SysRq function fires and nothing\nis written to the target's kernel log. (Whether "
             "xt_SYSRQ is loaded with the right\npassword the target's own 'status' says: "
             "'armed'.)\n\n"
             "--metrics writes Prometheus' text format for node_exporter's textfile collector\n"
             "(atomically): sysrq_appliance_target_up, _probe_round_trip_seconds,\n"
             "_last_success_timestamp_seconds, _check_timestamp_seconds. "
             "sysrq-appliance-check.timer\nruns 'check --all --metrics' every minute once "
             "enabled.\n\n"
             "exit codes: 0 every target up, 1 runtime failure, 2 bad input, 3 a target down")
    p.add_argument("targets", metavar="TARGET", nargs="*",
                   help="peer names or addresses from the config (default: all)")
    p.add_argument("--all", action="store_true", help="every target in the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--metrics", metavar="PATH", type=_path,
                   help="also write the results to PATH (*.prom) for node_exporter")
    p.add_argument("--quiet", action="store_true", help="print nothing (for the timer)")
    p.add_argument("--wait", type=_seconds(60), default=2.0, metavar="SECONDS",
                   help="how long to wait for the answers, 0 to 60 (default: 2)")
    p.set_defaults(func=_check)

    p = _sub(sub, "helper", "serve the operators' socket (run by sysrq-appliance-helper.service)",
             "systemctl enable --now sysrq-appliance-helper.socket",
             "The root half of 'send' for members of the operators' group, started by systemd "
             "socket\nactivation with its socket (sysrq-appliance-helper.socket); not for "
             "interactive use.\nEach connection: the caller's credentials (SO_PEERCRED), one "
             "request of send's\narguments, the send, its lines and exit code back, an audit "
             "entry.")
    p.add_argument("--group", default=opsocket.GROUP, metavar="NAME",
                   help="the operators' group (default: %(default)s)")
    p.set_defaults(func=_helper)
    return parser


def _send_arguments(p, operator=False):
    """`send`'s arguments; the operators' helper takes all but the root-only ones."""
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="peer name or address from the config, or several joined by commas "
                        "(web1,web2); not with --group or --all")
    p.add_argument("keys", metavar="KEYS", nargs="?",
                   help="one or more SysRq keys, e.g. s or sub (or use --sequence)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--group", metavar="NAME",
                       help="send to every target of group NAME (the config's groups:)")
    which.add_argument("--all", action="store_true", dest="everyone",
                       help="send to every target in the config")
    p.add_argument("--sequence", metavar="NAME",
                   help="send a rescue sequence, one request per step (listed above)")
    p.add_argument("--count", type=_whole(1, 1000), default=1, metavar="N",
                   help="send N identical copies, 1 to 1000 (safe: the target drops replays)")
    p.add_argument("--wait", type=_seconds(60), default=1.0, metavar="SECONDS",
                   help="how long to wait for the confirmation, 0 to 60 (default: 1)")
    p.set_defaults(settle_usage=_send_usage(p))
    if operator:
        return
    p.add_argument("--dry-run", action="store_true",
                   help="print the request instead of sending it (never the password)")
    p.add_argument("--seqno", type=_whole(1, MAX_CHOSEN), help="use this sequence number (with "
                   "--dry-run: reproducible output)")
    p.add_argument("--salt", help="use this salt, 1-64 of A-Z a-z 0-9 _ - (with --dry-run: "
                   "reproducible output)")


def _send_usage(parser):
    """TARGET and KEYS are both optional positionals, so argparse cannot tell a usage
    error here; with --group or --all the one positional given is KEYS."""
    def check(args):
        if args.group is not None or args.everyone:
            if args.keys is not None:
                parser.error("with --group or --all, give no TARGET (only KEYS or "
                             "--sequence NAME)")
            args.target, args.keys = None, args.target
        elif args.target is None:
            parser.error("the following arguments are required: TARGET (or --group NAME, "
                         "or --all)")
    return check


def _load(args, **kwargs):
    # Secrets must belong to whoever runs us (config.load's default): root in production.
    return config.load(args.config, **kwargs)


def _kernel_verb(name):
    """commands.NAME, imported when it runs: commands imports pyroute2, which send,
    pair and password never need."""
    def run(args):
        from sysrq_appliance import commands
        return getattr(commands, name)(args)
    return run


def _pair(args):
    from sysrq_appliance import pair
    target = pair.parse_host(args.target, "--target")
    sender = pair.parse_host(args.sender, "--sender")
    allow = pair.parse_allow(args.allow)
    t_dir, s_dir = pair.write_bundle(target, sender, args.out, args.algorithm, args.port,
                                     args.etc_dir, args.force, allow)
    print(f"wrote {t_dir}/ and {s_dir}/ (files 0600, directories 0700)")
    print(f"next: copy {t_dir}/ to {target[0]}:{args.etc_dir}/ and {s_dir}/ to "
          f"{sender[0]}:{args.etc_dir}/ (e.g. rsync -a over ssh, as root),")
    print("      then run 'sysrq-appliance apply' on both (or enable sysrq-appliance.service);")
    print("      delete the bundle afterwards: it holds the keys and the password")
    return EXIT_OK


def _fleet_render(args):
    from sysrq_appliance import fleetdir, inventory
    from sysrq_appliance.secretfile import check_path_text
    inv = inventory.load(args.inventory)
    # A relative --out is where the caller stands; checked before anything is created.
    out = check_path_text(os.path.abspath(args.out), "--out", example="/root/fleet")
    report = fleetdir.render(inv, out)
    for verb, hosts in (("wrote", report.written), ("removed", report.removed)):
        for host, paths in hosts.items():
            shown = ", ".join(paths) if len(paths) <= 4 else f"{len(paths)} files"
            print(f"{verb} {os.path.join(args.out, host)}/: {shown}")
    written = sum(map(len, report.written.values()))
    removed = sum(map(len, report.removed.values()))
    hosts = len(inv.admins) + len(inv.targets)
    print(f"{hosts} hosts in {args.out}: {written} files written, {removed} removed, "
          f"{report.unchanged} unchanged" + ("" if written or removed else
                                             " (nothing to change)"))
    return EXIT_OK


def _read_new_password(args):
    from sysrq_appliance import password
    if args.file:
        return password.read_new(args.file)
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("password set: give the password on stdin or with --file "
                         "(never as an argument)")
    return password.validate(_read_stdin(password.MAX_BYTES + 1), "stdin")


def _read_stdin(limit, timeout=30.0):
    """Up to `limit` bytes of stdin until its end: enough to say "too long", never a
    MemoryError, and never a hang on a writer that does not close (`(printf x; sleep 1d) |`)."""
    import select
    fd, data = sys.stdin.fileno(), b""
    deadline = time.monotonic() + timeout
    while len(data) < limit:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise InputError(f"stdin: no end of input after {timeout:g} s; pipe the password "
                             "and close (printf '%s' \"$NEW\" | ...), or use --file")
        chunk = os.read(fd, limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _password_set(args):
    from sysrq_appliance import password
    cfg = _load(args, check_secrets=False)
    new = _read_new_password(args)
    if cfg.role == "sender":
        if not args.peer:
            raise InputError("--peer: required on a sender; name the target this password is "
                             f"for ({', '.join(p.name for p in cfg.peers[:10])})")
        path = cfg.find_peer(args.peer, "--peer").password_file
        password.check_destination(path)
        with lock.held(args.state_dir, "password set"):
            password.store(path, new)
        print(f"stored the password for {args.peer} in {path}")
        return EXIT_OK
    if args.peer:
        raise InputError("--peer: only on a sender; a target has one password")
    password.check_destination(cfg.password_file)
    with lock.held(args.state_dir, "password set"):
        _activate_target_password(cfg, new, args.sysfs_dir)
    return EXIT_OK


def _activate_target_password(cfg, new, sysfs_dir):
    from sysrq_appliance import password
    if password.activate(cfg.password_file, new, sysfs_dir):
        print(f"stored the password in {cfg.password_file} and handed it to xt_SYSRQ")
    else:
        print(f"stored the password in {cfg.password_file} "
              "(xt_SYSRQ not loaded: 'apply' hands it over)")
    print(f"senders must receive {cfg.password_file} as their password_file for this target "
          "(copy it as root, keep mode 0600)")


def _password_rotate(args):
    from sysrq_appliance import password
    cfg = _load(args, check_secrets=False)
    if cfg.role != "target":
        raise InputError(f"{cfg.path}: role: rotate runs on the target; on a sender use "
                         "'password set --peer NAME' with the file the target wrote")
    password.check_destination(cfg.password_file)
    with lock.held(args.state_dir, "password rotate"):
        _activate_target_password(cfg, password.generate(args.length), args.sysfs_dir)
    return EXIT_OK


def _send(args, caller=None, out=None, err=None):
    """send: as root itself, as anyone else through the operators' helper; either way one
    audit entry per request and target (or one for a refusal)."""
    out = out or (lambda line: print(line, flush=True))
    err = err or (lambda line: print(line, file=sys.stderr))
    if caller is None and _through_helper(args):
        from sysrq_appliance import sending
        sending.check_request(args.keys, args.sequence, args.salt)   # what needs no config
        return _send_through_helper(args, out, err)
    from sysrq_appliance import audit, sending
    asked = (args.target if args.target is not None
             else f"--group {args.group}" if args.group is not None else "--all")
    trail = audit.Trail(caller or audit.Caller.this_process(), asked, args.keys,
                        args.sequence, warn=err)
    audited = not args.dry_run   # a dry run sends nothing
    try:
        sending.check_request(args.keys, args.sequence, args.salt)
        cfg = _load(args)
        trail.admin_address = cfg.local
        options = sending.Options(count=args.count, wait=args.wait, dry_run=args.dry_run,
                                  seqno=args.seqno, salt=args.salt, state_dir=args.state_dir)
        not_done = sending.send(cfg, args.target, args.keys, args.sequence, options,
                                report=out, warn=err,
                                audit=trail.request if audited else None,
                                found=lambda peer: trail.config(cfg, peer.address),
                                group=args.group, everyone=args.everyone)
    except sending.NothingSent:
        raise   # each target's not-sent entry is written already
    except ApplianceError as exc:
        if audited:
            trail.failed(exc, refused=isinstance(exc, InputError))
        raise
    return EXIT_NOT_CONFIRMED if not_done else EXIT_OK


def _through_helper(args):
    """Not root, with this host's config, and nothing only the config's owner may do (a dry
    run, a chosen seqno or salt): the operators' helper sends."""
    return (os.geteuid() != 0 and not args.dry_run and args.seqno is None
            and args.salt is None and args.config == config.DEFAULT_PATH
            and args.state_dir == DEFAULT_STATE_DIR)


def _send_through_helper(args, out, err):
    """A non-root `send`: the arguments to the operators' helper, its lines printed."""
    from sysrq_appliance import audit
    argv = opsocket.operator_argv(args.target, args.keys, args.sequence, args.count, args.wait,
                                  args.group, args.everyone)
    return opsocket.request(args.helper_socket, argv, out, err, audit.user_name(os.getuid()),
                            opsocket.answer_deadline(args.wait, args.sequence))


def operator_send(settings, argv, caller, out, err):
    """The helper's `run`: an operator's `send` arguments, parsed and refused exactly as the
    CLI would (same lines, same exit codes), then sent as root with `settings` (the
    helper's own --config and --state-dir)."""
    try:
        args = _OperatorParser().parse_args(argv)
        args.settle_usage(args)
    except _Usage as usage:
        from sysrq_appliance import audit
        audit.Trail(caller, None, None, None, warn=err).failed(InputError(usage), refused=True)
        err(str(usage))
        return EXIT_INPUT
    args.config, args.state_dir = settings
    args.dry_run, args.seqno, args.salt = False, None, None
    return _guarded(lambda: _send(args, caller, out, err), err=err)


def _check(args):
    import json
    from sysrq_appliance import health
    if args.metrics:
        health.check_metrics_path(args.metrics)
    cfg = _load(args)
    peers = health.select_peers(cfg, args.targets, args.all)
    results = health.probe(cfg, peers, args.wait)
    now = time.time()
    if args.metrics:
        health.write_metrics(args.metrics, results, now)
    if args.json:
        print(json.dumps(health.as_json(results, now), indent=2, sort_keys=True))
    elif not args.quiet:
        print(health.render_table(results))
    return EXIT_OK if all(r.up for r in results) else EXIT_NOT_CONFIRMED


def _helper(args):
    from sysrq_appliance import helper
    gid = helper.group_id(args.group)
    listener = helper.listener_from_systemd()
    path = listener.getsockname() or args.helper_socket
    settings = (args.config, args.state_dir)
    helper.serve(listener, gid, args.group, path,
                 lambda argv, caller, out, err: operator_send(settings, argv, caller, out, err))
    return EXIT_OK


def main(argv=None):
    """Run one command; every outcome is an exit code and at most one line on stderr."""
    umask = os.umask(0o077)   # what we create is ours alone, whatever umask we were given
    sigterm = signal.signal(signal.SIGTERM, _interrupt)   # a stop mid-apply undoes like ^C
    try:
        code = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()   # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:   # ^C or SIGTERM before a command took over (parsing its arguments)
        return _fail("interrupted", EXIT_RUNTIME, lambda line: print(line, file=sys.stderr))
    except (BrokenPipeError, OSError, ValueError):
        # `sysrq-appliance plan | head`, stdout closed or full: the reader cannot hear more.
        if sys.stdout is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME
    finally:
        os.umask(umask)
        signal.signal(signal.SIGTERM, sigterm)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _main(argv):
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "settle_usage", None):
            args.settle_usage(args)
    except SystemExit as exc:   # --help, --version, or a usage error already printed
        return exc.code
    return _guarded(lambda: args.func(args), getattr(args, "debug", False))


def _guarded(run, debug=False, err=None):
    """run(): its exit code, or every failure as one line (through `err`) and its code."""
    err = err or (lambda line: print(line, file=sys.stderr))
    try:
        return run()
    except InputError as exc:
        return _fail(exc, EXIT_INPUT, err)
    except ApplianceError as exc:
        return _fail(exc, EXIT_RUNTIME, err)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_RUNTIME, err)
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            where = f" ({exc.filename})" if exc.filename else ""
            return _fail(f"permission denied{where}: {exc.strerror}; run as root "
                         "(e.g. sudo sysrq-appliance ...)", EXIT_INPUT, err)
        return _internal_error(debug, err)
    except Exception:   # a bug: one line, and the traceback only when asked for
        return _internal_error(debug, err)


def _fail(message, code, err):
    err(f"sysrq-appliance: {message}")
    return code


def _internal_error(debug, err):
    kind, _, tb = sys.exc_info()
    if debug:
        traceback.print_exc()
    # The type and the place, not the message: a message could quote a value we hold.
    frame = traceback.extract_tb(tb)[-1]
    where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return _fail(f"internal error: {kind.__name__} at {where}, please report it "
                 "(run again with --debug for the traceback)", EXIT_RUNTIME, err)
