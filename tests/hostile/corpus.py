"""The hostile-input corpus: cases as data (cases.yaml), one runner.

Each case installs a fresh pair half in a private scratch directory, applies its hostile
edits (config fields, raw bytes, file modes, owners and types), runs the real CLI as a
subprocess and checks: the exact exit code, exactly one line on stderr (the exact text,
with @CFG@/@ETC@/@DIR@/@STATE@ for the scratch paths, @USER@ for a helper case's client),
no traceback, no secret byte in any output, and nothing changed on disk. The netns tier
also checks the namespace's kernel.

    - id: local-zone-id               unique name
      role: target                    the half installed in @ETC@ (target | sender)
      set: {local: "fe80::1%eth0"}    config fields to replace (dotted paths, peers.0.name)
      drop: [sysrq.allow]             config fields to remove
      raw: "role: target\n..."        or the whole config text (generators: see RAW)
      files: [[chmod, "0644", "@ETC@/password"]]   ops, see _OPS
      stdin: "text"                   what the command reads on stdin (default: nothing)
      argv: [send, web1, s]           after --config/--state-dir/--sysfs-dir/--sysctl-path
      bare: true                      argv without those global options
      root: true                      needs root (chown); skipped, saying so, without it
      kernel: true                    a kernel verb: runs in the netns tier only
      exit: 2
      error: "@CFG@: local: ..."      the one stderr line, after "sysrq-appliance: "

Through the operators' helper (role sender; tests/lib/operators.py starts a real helper
process with the scratch config, handed its socket as systemd hands it):

      via: helper                     argv runs as a non-root client of the helper
      request: "send\0--dry-run\0"    or these raw bytes are the request (the protocol's
                                      answers are turned into stdout, stderr, exit code)
      hold: 3                         the client first holds this many silent connections
"""

import copy
import hashlib
import os
import pathlib
import stat
import subprocess
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))
import operators  # noqa: E402
PYTHON = "/usr/bin/python3"
PROGRAM = [PYTHON, "-m", "sysrq_appliance"]
TIMEOUT = 30   # seconds: a hang is a failure, not a stuck CI

# Generated raw configs too large or too odd to keep in cases.yaml.
RAW = {
    "billion-laughs": lambda: "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)) + "role: *j\n",
    "nested-10k": lambda: "role: " + "[" * 10000 + "]" * 10000 + "\n",
    "nested-200k": lambda: "role: " + "[" * 200000 + "]" * 200000 + "\n",
    "nested-map-10k": lambda: "role: " + "{a: " * 10000 + "b" + "}" * 10000 + "\n",
    "huge-9mib": lambda: "# " + "x" * (9 * 1024 * 1024) + "\nrole: target\n",
    # Many tiny nodes in a small file: bounded by the event count, not the byte size.
    "empty-lists-500k": lambda: "role: target\nx: [" + "[], " * 500000 + "[]]\n",
    "peers-16385": lambda: "role: sender\nlocal: 10.0.0.1\npeers:\n" + "".join(
        f"  - {{name: p{i}, address: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255 or 1}, "
        f"spi_in: {0x1000 + 2 * i}, spi_out: {0x1001 + 2 * i}, key_file: /k, "
        f"password_file: /p}}\n" for i in range(16385)),
}


STDIN = {"megabytes": lambda: b"x" * (8 << 20)}
REQUESTS = {"flood-100k": lambda: b"send\0" + b"x" * 100000 + b"\0"}


def load_cases(path=HERE / "cases.yaml"):
    with open(path, encoding="utf-8") as f:
        cases = yaml.safe_load(f)
    ids = [case["id"] for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


class Scratch:
    """A pair half installed under a private directory, as the case needs it."""

    def __init__(self, directory, role="target", family=4):
        self.dir = pathlib.Path(directory)
        self.etc, self.state = self.dir / "etc", self.dir / "state"
        self.sysfs, self.sysctl = self.dir / "sys", self.dir / "sysrq"
        self.config = self.etc / "appliance.yaml"
        target, sender = (("10.10.25.7", "10.10.25.1") if family == 4
                          else ("2001:db8::7", "2001:db8::1"))
        run([*PROGRAM, "pair", "--target", f"web1={target}", "--sender",
             f"admin1={sender}", "--out", str(self.dir / "bundle"), "--etc-dir",
             str(self.etc), "--allow", "sync,remount,reboot,dump"], check=True)
        subprocess.run(["cp", "-a", f"{self.dir}/bundle/{role}/.", str(self.etc)], check=True)
        subprocess.run(["rm", "-rf", str(self.dir / "bundle")], check=True)
        self.sysfs.mkdir(mode=0o700)
        (self.sysfs / "password").write_bytes(b"")
        (self.sysfs / "hash").write_text("sha1\n")
        self.sysctl.write_text("1\n")
        self.secrets = self._secrets()

    def _secrets(self):
        """Every secret byte string a command could leak: passwords and key halves."""
        found = []
        for path in self.etc.rglob("*"):
            if path.is_file() and (path.name == "password" or path.parent.name in
                                   ("passwords", "keys")):
                data = path.read_bytes()
                if path.parent.name == "keys":
                    found += [w.encode() for w in data.decode().split() if len(w) >= 32]
                else:
                    found.append(data)
        return found

    def expand(self, text):
        return (text.replace("@CFG@", str(self.config)).replace("@ETC@", str(self.etc))
                .replace("@STATE@", str(self.state)).replace("@DIR@", str(self.dir))
                .replace("@USER@", _client_user()))

    def globals(self):
        return ["--config", str(self.config), "--state-dir", str(self.state),
                "--sysfs-dir", str(self.sysfs), "--sysctl-path", str(self.sysctl)]

    def edit_config(self, case):
        if "raw" in case or "raw_generator" in case:
            text = RAW[case["raw_generator"]]() if "raw_generator" in case else case["raw"]
            data = (text.encode("utf-8", "surrogateescape") if isinstance(text, str)
                    else bytes(text))
            self.config.write_bytes(self.expand(data.decode("latin-1")).encode("latin-1"))
            return
        if "set" not in case and "drop" not in case:
            return
        document = yaml.safe_load(self.config.read_text())
        for dotted, value in (case.get("set") or {}).items():
            parent, key = _walk(document, dotted)
            parent[key] = copy.deepcopy(_expand_value(self, value))
        for dotted in case.get("drop") or ():
            parent, key = _walk(document, dotted)
            del parent[key]
        self.config.write_text(yaml.safe_dump(document, sort_keys=False))

    def apply_ops(self, ops):
        for op, *args in ops or ():
            _OPS[op](self, *[self.expand(str(a)) for a in args])


def _expand_value(scratch, value):
    if isinstance(value, str):
        return scratch.expand(value)
    if isinstance(value, list):
        return [_expand_value(scratch, v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_value(scratch, v) for k, v in value.items()}
    return value


def _walk(document, dotted):
    parts = dotted.split(".")
    node = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    return node, (int(last) if isinstance(node, list) else last)


def _write(s, path, text):
    pathlib.Path(path).write_bytes(text.encode("utf-8", "surrogateescape"))


_OPS = {
    "chmod": lambda s, mode, path: os.chmod(path, int(mode, 8)),
    "chown": lambda s, uid, path: os.lchown(path, int(uid), int(uid)),
    "mkfifo": lambda s, path: (_remove(path), os.mkfifo(path, 0o600)),
    "symlink": lambda s, target, link: (_remove(link), os.symlink(target, link)),
    "mkdir": lambda s, mode, path: (os.mkdir(path), os.chmod(path, int(mode, 8))),
    "rm": lambda s, path: _remove(path),
    "write": _write,
    "append": lambda s, path, text: open(path, "a").write(text),
    "devnull": lambda s, path: (_remove(path), os.symlink("/dev/zero", path)),
    "mknod": lambda s, path: (_remove(path), os.mknod(path, stat.S_IFCHR | 0o600,
                                                      os.makedev(1, 5))),   # /dev/zero
    "rename": lambda s, old, new: os.rename(old, new),
}


def _remove(path):
    p = pathlib.Path(path)
    if p.is_dir() and not p.is_symlink():
        subprocess.run(["rm", "-rf", str(p)], check=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def run(argv, input=None, check=False, prefix=()):
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"],
           "LC_ALL": "C.UTF-8"}
    result = subprocess.run([*prefix, *argv], input=input, capture_output=True, env=env,
                            timeout=TIMEOUT, stdin=None if input is not None else
                            subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(directory):
    """Every file under `directory`: type, mode, owner, content hash (never read a FIFO)."""
    state = {}
    for path in sorted(pathlib.Path(directory).rglob("*")):
        st = path.lstat()
        entry = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid)
        if stat.S_ISREG(st.st_mode):
            entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
        elif stat.S_ISLNK(st.st_mode):
            entry += (os.readlink(path),)
        state[str(path.relative_to(directory))] = entry
    st = os.lstat(directory)
    state["."] = (stat.S_IMODE(st.st_mode), st.st_uid)
    return state


def execute(case, directory, prefix=(), extra=()):
    """Set the case up in `directory`, run it; (scratch, result, before, after)."""
    scratch = Scratch(directory, case.get("role", "target"), case.get("family", 4))
    scratch.edit_config(case)
    scratch.apply_ops(case.get("files"))
    before = snapshot(scratch.dir)
    argv = [scratch.expand(str(a)) for a in case["argv"]]
    if not case.get("bare"):
        argv = scratch.globals() + list(extra) + argv
    stdin = case.get("stdin")
    if "stdin_generator" in case:
        stdin = STDIN[case["stdin_generator"]]()
    elif stdin is not None:
        stdin = stdin.encode("utf-8", "surrogateescape")
    result = run([*PROGRAM, *argv], prefix=prefix, input=stdin)
    return scratch, result, before, snapshot(scratch.dir)


def execute_via_helper(case, directory, prefix=()):
    """A case through the operators' helper: the helper (root in the netns tier, else this
    user) with the scratch config; the client as nobody holding a throwaway group id (as
    root) or as this user, whose own group is then the operators' group."""
    scratch = Scratch(directory, case.get("role", "sender"), case.get("family", 4))
    scratch.edit_config(case)
    scratch.apply_ops(case.get("files"))
    before = snapshot(scratch.dir)
    if os.geteuid() == 0:
        gid = operators.unused_gid()
        user, groups = operators.NOBODY, [gid]
    else:
        gid, user, groups = os.getgid(), None, []
    sockets = operators.socket_dir()
    helper = operators.Helper(sockets, scratch.config, scratch.state, gid, prefix=prefix)
    try:
        if "request" in case or "request_generator" in case:
            raw = (REQUESTS[case["request_generator"]]() if "request_generator" in case
                   else case["request"].encode("utf-8", "surrogateescape"))
            result = _as_result(*helper.raw(raw, user=user, groups=groups,
                                            hold=case.get("hold", 0)))
        else:
            result = helper.client(*[scratch.expand(str(a)) for a in case["argv"]], user=user,
                                   groups=groups, timeout=TIMEOUT)
    finally:
        out, err = helper.stop()
        operators.remove_socket_dir(sockets)
    assert out == err == "", f"the helper printed: {out}{err}"
    return scratch, result, before, snapshot(scratch.dir)


def _client_user():
    """Who a helper case's client runs as (execute_via_helper): nobody as root, else us."""
    import pwd
    return pwd.getpwuid(operators.NOBODY if os.geteuid() == 0 else os.getuid()).pw_name


def _as_result(messages, done):
    """The helper's answer messages as a finished command: stdout, stderr, exit code."""
    out = b"".join(m[1:] + b"\n" for m in messages if m[:1] == b"o")
    err = b"".join(m[1:] + b"\n" for m in messages if m[:1] == b"e")
    exits = [int(m[1:]) for m in messages if m[:1] == b"x"]
    assert done.returncode == 0 and len(exits) == 1, (messages, done.stderr)
    return subprocess.CompletedProcess(done.args, exits[0], out, err)


def check(case, scratch, result, before, after):
    """The assertions every case must pass."""
    out, err = result.stdout, result.stderr
    assert b"Traceback" not in out + err, err.decode(errors="replace")
    for secret in scratch.secrets:
        assert secret not in out + err, "a secret reached the output"
    lines = err.decode(errors="replace").splitlines()
    assert result.returncode == case["exit"], (result.returncode, lines)
    if case["exit"] != 0:
        assert len(lines) == 1, lines
        expected = "sysrq-appliance: " + scratch.expand(case["error"])
        if case.get("usage"):    # argparse's own line: "PROG: error: ... (see '... --help')"
            expected = scratch.expand(case["error"])
        assert lines[0] == expected, f"\n got: {lines[0]}\nwant: {expected}"
    if case["exit"] == 2:
        assert after == before, "a refused command changed files"
