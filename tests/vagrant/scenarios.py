#!/usr/bin/python3
"""Run a two-VM scenario file: one check per line, a pass/fail table, exit 1 on any failure.

    scenarios.py --ssh-config FILE [--vagrant-dir DIR] [--log FILE] SCENARIO.scn

A scenario file, in the spirit of strongSwan's testing/ (see tests/vagrant/README.md):

    # comment
    include common.scn                         another file, relative to this one
    todo: send target h fires                  a check still to be written (shown, not run)
    HOST :: COMMAND :: EXPECTATION             one check

COMMAND runs as root on HOST (a Vagrant machine name) through ssh — or, for HOST `local`,
on this machine (the harness host), in the Vagrant directory, for up to 15 minutes (the fleet
rollout runs ansible-playbook from here over the management network) — or is one of
    -            nothing (for expectations about the machine itself)
    @mark        put a mark into HOST's kernel log; `log` expectations read after it
    @reboot      reboot HOST and wait until ssh answers again
    @start       boot HOST again after a poweroff (vagrant up, no provisioning), wait for ssh
    @overlay DIR lay the files under DIR (relative to this file; it mirrors HOST's /) over
                 HOST's files, root-owned, mode 0600 (0700 if executable or a directory);
                 the files it replaces are kept on HOST
    @restore     put back every file the overlays on HOST replaced, remove the ones they added

EXPECTATION is one of (TEXT and REGEX in double quotes; "output" is stdout and stderr):
    ok | fails | exit N                   exit status 0 / not 0 / N
    empty                                 no output at all (blank lines aside)
    contains TEXT | !contains TEXT        output contains TEXT / does not
    matches REGEX | !matches REGEX        Python re.search on the output, multi-line
    log TEXT [within S]                   HOST's kernel log since its last @mark (or boot)
                                          shows TEXT within S seconds (default 10)
    !log TEXT [after S]                   ... still does not show TEXT after S seconds (default 3)
    powered-off [within S]                the hypervisor reports HOST off within S s (default 120)
    unreachable [within S]                a new ssh login (with a terminal) to HOST fails or
                                          hangs (20 s) within S s (default 60)
    reachable [within S]                  a new ssh login to HOST works within S s (default 300)
    serial TEXT [within S]                HOST's serial console since its last @mark shows TEXT
                                          within S s (default 10): the kernel's own words, also
                                          across a reboot or with all of userspace stopped

Uses only the standard library and the system's ssh; needs Debian's /usr/bin/python3 >= 3.9.
"""
import argparse
import dataclasses
import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time

COMMAND_TIMEOUT = int(os.environ.get("SCN_TIMEOUT", "180"))
LOCAL = "local"           # the HOST that is this machine
LOCAL_TIMEOUT = 900
KINDS = {  # kind: (number of TEXT/N arguments, name of the optional seconds keyword, default s)
    "ok": (0, None, 0), "fails": (0, None, 0), "exit": (1, None, 0),
    "empty": (0, None, 0), "contains": (1, None, 0), "!contains": (1, None, 0),
    "matches": (1, None, 0), "!matches": (1, None, 0),
    "log": (1, "within", 10), "!log": (1, "after", 3),
    "powered-off": (0, "within", 120), "unreachable": (0, "within", 60),
    "reachable": (0, "within", 300), "serial": (1, "within", 10),
}


COMMANDS = ("@mark", "@reboot", "@start", "@overlay", "@restore")

# Where @overlay keeps, on the host, the originals it replaced (saved/) and the list of the
# files and directories it added (created); @restore undoes both and removes it.
OVERLAY_STATE = "/var/lib/sysrq-scenario-overlay"
OVERLAY_SCRIPT = r"""set -eu
state=%(state)s
new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
tar -C "$new" -xpf -
mkdir -p -m 0700 "$state/saved"
touch "$state/created"
cd "$new"
# Sorted: a directory comes before what it holds.
find . -mindepth 1 | sort | while read -r src; do
    dest=${src#.}
    if [ -d "$src" ]; then
        [ -d "$dest" ] || { install -d -m 0700 "$dest"; echo "$dest" >>"$state/created"; }
        continue
    fi
    if [ ! -e "$dest" ]; then
        echo "$dest" >>"$state/created"
    elif [ ! -e "$state/saved$dest" ] && ! grep -qxF "$dest" "$state/created"; then
        mkdir -p "$state/saved${dest%%/*}"
        cp -a "$dest" "$state/saved$dest"
    fi
    cp -p "$src" "$dest"
    echo "overlay: $dest"
done
""" % {"state": OVERLAY_STATE}
RESTORE_SCRIPT = r"""set -eu
state=%(state)s
[ -d "$state" ] || { echo "restore: no overlay to undo"; exit 0; }
# Reverse order: what a directory holds goes before the directory.
sort -r "$state/created" | while read -r path; do
    if [ -d "$path" ]; then rmdir "$path"; else rm -f "$path"; fi
    echo "restore: removed $path"
done
cd "$state/saved"
find . -type f | while read -r src; do
    cp -a "$src" "${src#.}"
    echo "restore: ${src#.}"
done
rm -rf "$state"
""" % {"state": OVERLAY_STATE}


class ScenarioError(Exception):
    """A scenario file that cannot be read; names the file and line."""


@dataclasses.dataclass(frozen=True)
class Expectation:
    kind: str
    arg: str | None
    seconds: float

    def __str__(self):
        text = self.kind
        if self.arg is not None:
            text += ' "' + self.arg.replace('"', '\\"') + '"'

        keyword = KINDS[self.kind][1]
        if keyword and self.seconds != KINDS[self.kind][2]:
            text += f" {keyword} {self.seconds:g}"
        return text


@dataclasses.dataclass(frozen=True)
class Check:
    where: str           # file:line
    host: str
    command: str
    expect: Expectation | None   # None: a todo
    todo: str = ""


# ------------------------------------------------------------------------------ parsing
def parse_expectation(text):
    """Expectation from its text, or None when the text is not one."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if not words or words[0] not in KINDS:
        return None
    kind, rest = words[0], words[1:]
    nargs, keyword, seconds = KINDS[kind]
    if len(rest) < nargs:
        return None
    arg = rest[0] if nargs else None
    rest = rest[nargs:]
    if rest:
        if keyword is None or len(rest) != 2 or rest[0] != keyword:
            return None
        try:
            seconds = float(rest[1])
        except ValueError:
            return None
    if kind == "exit" and not re.fullmatch(r"\d+", arg):
        return None
    if kind.endswith("matches"):
        try:
            re.compile(arg)
        except re.error:
            return None
    return Expectation(kind, arg, seconds)


def parse_check(line, where):
    """HOST :: COMMAND :: EXPECTATION. The command may itself contain '::' (IPv6 addresses):
    the expectation is the text after the right-most '::' that leaves a valid expectation."""
    host, sep, rest = line.partition("::")
    host = host.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
        raise ScenarioError(f"{where}: expected HOST :: COMMAND :: EXPECTATION")
    cuts = [m.start() for m in re.finditer("::", rest)]
    for cut in reversed(cuts):
        expect = parse_expectation(rest[cut + 2:].strip())
        if expect:
            command = rest[:cut].strip()
            if not command:
                raise ScenarioError(f"{where}: empty command (use '-' for none)")
            return Check(where, host, command, expect)
    raise ScenarioError(f"{where}: no valid expectation after the last '::' "
                        f"(one of: {', '.join(KINDS)})")


def load(path, seen=()):
    """All checks of a scenario file, includes expanded, in order."""
    path = os.path.abspath(path)
    if path in seen:
        raise ScenarioError(f"{path}: included from itself")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    checks = []
    for number, line in enumerate(lines, 1):
        where = f"{os.path.basename(path)}:{number}"
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("include "):
            name = line[len("include "):].strip()
            checks += load(os.path.join(os.path.dirname(path), name), seen + (path,))
        elif line.startswith("todo:"):
            checks.append(Check(where, "", "", None, line[len("todo:"):].strip()))
        else:
            checks.append(resolve_command(parse_check(line, where), path))
    return checks


def resolve_command(check, path):
    """Refuse an unknown @command; make @overlay's directory absolute (it is relative to
    the file that names it, as includes are)."""
    if not check.command.startswith("@"):
        return check
    name, _, arg = check.command.partition(" ")
    if name not in COMMANDS:
        raise ScenarioError(f"{check.where}: unknown command {name}; use one of: "
                            f"{', '.join(COMMANDS)}")
    if (name == "@overlay") != bool(arg.strip()):
        raise ScenarioError(f"{check.where}: @overlay takes one directory, the others nothing")
    if name != "@overlay":
        return check
    directory = os.path.join(os.path.dirname(path), arg.strip())
    if not os.path.isdir(directory):
        raise ScenarioError(f"{check.where}: overlay directory {directory} does not exist")
    return dataclasses.replace(check, command=f"@overlay {directory}")


# ------------------------------------------------------------------------------ running
@dataclasses.dataclass
class Result:
    status: int | None = None    # exit status; None: did not run / timed out
    output: str = ""


class Hosts:
    """Runs commands on the Vagrant machines through ssh (one shared connection per host)."""

    def __init__(self, ssh_config, vagrant_dir, control_dir, log, serial_dir=None):
        self.ssh_config = ssh_config
        self.vagrant_dir = vagrant_dir
        self.control_dir = control_dir
        self.log = log
        self.serial_dir = serial_dir
        self.marks = {}
        self.serial_marks = {}

    def ssh(self, host, command, timeout=COMMAND_TIMEOUT, shared=True, connect_timeout=15,
            login=False, stdin=None):
        argv = ["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if shared:
            argv += ["-o", "ControlMaster=auto", "-o", "ControlPersist=300",
                     "-o", f"ControlPath={self.control_dir}/%h"]
        else:
            argv += ["-o", "ControlPath=none"]
        if login:   # a terminal, as an operator's login has: sshd records it (utmp, wtmp)
            argv += ["-tt"]
        argv += [host, "sudo -n sh -c " + shlex.quote(command)]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout,
                                  **({"input": stdin} if stdin is not None
                                     else {"stdin": subprocess.DEVNULL}))
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"") + (exc.stderr or b"")
            return Result(None, out.decode(errors="replace") + f"\n[timed out after {timeout} s]")
        return Result(done.returncode,
                      (done.stdout + done.stderr).decode(errors="replace"))

    def local(self, command, timeout=LOCAL_TIMEOUT):
        """COMMAND on this machine, in the Vagrant directory (the repository)."""
        try:
            done = subprocess.run(["sh", "-c", command], cwd=self.vagrant_dir,
                                  capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"") + (exc.stderr or b"")
            return Result(None, out.decode(errors="replace") + f"\n[timed out after {timeout} s]")
        return Result(done.returncode, (done.stdout + done.stderr).decode(errors="replace"))

    def forget_connection(self, host):
        subprocess.run(["ssh", "-F", self.ssh_config, "-o", f"ControlPath={self.control_dir}/%h",
                        "-O", "exit", host], capture_output=True)

    def mark(self, host):
        mark = f"sysrq-scenario-mark-{time.time_ns()}"
        self.marks[host] = mark
        self.serial_marks[host] = len(self.serial_log(host, since_mark=False))
        return self.ssh(host, f"echo {mark} > /dev/kmsg")

    def serial_log(self, host, since_mark=True):
        """What HOST's serial console printed (since its last @mark), read on this side."""
        if not self.serial_dir:
            return ""
        try:
            with open(os.path.join(self.serial_dir, f"{host}.log"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return ""
        start = self.serial_marks.get(host, 0) if since_mark else 0
        return data[start:].decode(errors="replace")

    def kernel_log(self, host):
        """The host's kernel log after its last mark (the whole log if the mark is gone)."""
        result = self.ssh(host, "dmesg")
        mark = self.marks.get(host)
        if result.status == 0 and mark and mark in result.output:
            result.output = result.output[result.output.rindex(mark) + len(mark):]
        return result

    def reboot(self, host):
        self.ssh(host, "systemctl reboot", timeout=30)
        self.forget_connection(host)
        time.sleep(10)
        return self.wait_until_up(host)

    def start(self, host):
        done = subprocess.run(["vagrant", "up", "--no-provision", host], cwd=self.vagrant_dir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=900)
        self.forget_connection(host)
        if done.returncode != 0:
            return Result(done.returncode, done.stdout + done.stderr)
        return self.wait_until_up(host)

    def wait_until_up(self, host, seconds=600):
        """Wait until ssh answers on HOST and it has booted since (uptime below `seconds`)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            result = self.ssh(host, "cat /proc/uptime", timeout=30, shared=False,
                              connect_timeout=10)
            if result.status == 0 and float(result.output.split()[0]) < seconds:
                return Result(0, f"up again: uptime {result.output.split()[0]} s")
            time.sleep(5)
        return Result(None, f"not back within {seconds} s")

    def overlay(self, host, directory):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(directory, arcname=".", filter=_root_private)
        return self.ssh(host, OVERLAY_SCRIPT, stdin=buf.getvalue())

    def power_state(self, host):
        done = subprocess.run(["vagrant", "status", "--machine-readable", host],
                              cwd=self.vagrant_dir, capture_output=True, text=True)
        for line in done.stdout.splitlines():
            fields = line.split(",")
            if len(fields) >= 4 and fields[2] == "state":
                return fields[3]
        return "unknown"


def _root_private(info):
    """Overlay files are configs and secrets: root's, and no one else's."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o700 if info.isdir() or info.mode & 0o100 else 0o600
    return info


def evaluate(check, hosts):
    """(passed, detail) for one check."""
    expect = check.expect
    kind = expect.kind
    result = Result(0, "")
    if check.command == "@mark":
        result = hosts.mark(check.host)
    elif check.command == "@reboot":
        result = hosts.reboot(check.host)
    elif check.command == "@start":
        result = hosts.start(check.host)
    elif check.command.startswith("@overlay "):
        result = hosts.overlay(check.host, check.command.split(" ", 1)[1])
    elif check.command == "@restore":
        result = hosts.ssh(check.host, RESTORE_SCRIPT)
    elif check.command != "-" and check.host == LOCAL:
        result = hosts.local(check.command)
    elif check.command != "-":
        result = hosts.ssh(check.host, check.command)
    hosts.log(f"--- {check.where} {check.host}: {check.command}\n"
              f"exit {result.status}\n{result.output.rstrip()}\n")

    if kind in ("ok", "fails", "exit"):
        want = {"ok": "0", "fails": "not 0"}.get(kind, expect.arg)
        passed = (result.status == 0 if kind == "ok"
                  else result.status not in (0, None) if kind == "fails"
                  else result.status == int(expect.arg))
        return passed, f"exit {result.status}, wanted {want}"
    if kind == "empty":
        return not result.output.strip(), f"output: {last_line(result.output)}"
    if kind in ("contains", "!contains", "matches", "!matches"):
        if kind.endswith("contains"):
            found = expect.arg in result.output
        else:
            found = re.search(expect.arg, result.output, re.MULTILINE) is not None
        passed = found != kind.startswith("!")
        return passed, "" if passed else f"output: {last_line(result.output)}"
    if kind in ("log", "!log"):
        deadline = time.monotonic() + expect.seconds
        while True:
            log = hosts.kernel_log(check.host)
            found = log.status == 0 and expect.arg in log.output
            if found or time.monotonic() >= deadline:
                break
            time.sleep(1)
        hosts.log(f"kernel log of {check.host} since mark:\n{log.output.rstrip()}\n")
        if log.status != 0:
            return False, f"cannot read the kernel log: {last_line(log.output)}"
        return found != (kind == "!log"), ""
    if kind == "serial":
        deadline = time.monotonic() + expect.seconds
        while expect.arg not in (text := hosts.serial_log(check.host)):
            if time.monotonic() >= deadline:
                break
            time.sleep(1)
        hosts.log(f"serial console of {check.host} since mark:\n{text.rstrip()}\n")
        return expect.arg in text, "" if expect.arg in text else "not on the serial console"
    if kind == "reachable":
        deadline = time.monotonic() + expect.seconds
        hosts.forget_connection(check.host)
        while True:
            probe = hosts.ssh(check.host, "true", timeout=20, shared=False, connect_timeout=5,
                              login=True)
            if probe.status == 0:
                return True, "ssh answers"
            if time.monotonic() >= deadline:
                return False, f"ssh exit {probe.status} after {expect.seconds:g} s"
            time.sleep(3)
    if kind in ("powered-off", "unreachable"):
        deadline = time.monotonic() + expect.seconds
        while True:
            if kind == "powered-off":
                state = hosts.power_state(check.host)
                if state in ("shutoff", "poweroff", "shutdown", "not_running"):
                    return True, f"state {state}"
            else:
                probe = hosts.ssh(check.host, "true", timeout=20, shared=False, connect_timeout=5,
                                  login=True)
                state = f"ssh exit {probe.status}"
                if probe.status not in (0,):
                    return True, state
            if time.monotonic() >= deadline:
                return False, f"still {state} after {expect.seconds:g} s"
            time.sleep(3)
    raise AssertionError(kind)


def last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(none)")[:100]


def shorten(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--ssh-config", required=True, help="output of `vagrant ssh-config`")
    parser.add_argument("--vagrant-dir", default=".", help="where the Vagrantfile is")
    parser.add_argument("--log", default=os.devnull, help="full output of every check")
    parser.add_argument("--serial-dir", help="where the machines' serial logs are (NAME.log)")
    parser.add_argument("--check-only", action="store_true", help="parse, list, run nothing")
    args = parser.parse_args(argv)
    try:
        checks = load(args.scenario)
    except ScenarioError as exc:
        print(f"scenario: {exc}", file=sys.stderr)
        return 2
    if args.check_only:
        for check in checks:
            print(f"{check.where}: " + (f"todo: {check.todo}" if check.expect is None else
                                        f"{check.host} :: {check.command} :: {check.expect}"))
        return 0

    control_dir = os.path.join(os.path.dirname(os.path.abspath(args.log))
                               if args.log != os.devnull else "/tmp", ".ssh-control")
    os.makedirs(control_dir, mode=0o700, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as logfile:
        def log(text):
            logfile.write(text)
            logfile.flush()
        hosts = Hosts(args.ssh_config, args.vagrant_dir, control_dir, log, args.serial_dir)
        rows, counts = [], {"PASS": 0, "FAIL": 0, "TODO": 0}
        print(f"{'':4} {'result':6} {'secs':>5}  {'host':7} {'command':48} expectation")
        for number, check in enumerate(checks, 1):
            if check.expect is None:
                status, seconds, detail = "TODO", 0.0, ""
                line = f"{number:3}. {status:6} {'':>5}  {'':7} {shorten(check.todo, 48):48}"
            else:
                start = time.monotonic()
                passed, detail = evaluate(check, hosts)
                seconds = time.monotonic() - start
                status = "PASS" if passed else "FAIL"
                line = (f"{number:3}. {status:6} {seconds:5.1f}  {check.host:7} "
                        f"{shorten(check.command, 48):48} {check.expect}")
                if not passed:
                    line += f"\n{'':14}{check.where}: {detail}"
                log(f"=== {status} {check.where} ({seconds:.1f} s) {detail}\n\n")
            counts[status] += 1
            rows.append(line)
            print(line, flush=True)
        for host in {c.host for c in checks if c.host and c.host != LOCAL}:
            hosts.forget_connection(host)
    # The closing line CI reads; the todo checks count as skipped.
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['TODO']} skipped")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
