"""The operators' helper as the tests run it: a real `sysrq-appliance helper` process handed
its listening socket the way systemd does (fd 3, LISTEN_FDS=1, LISTEN_PID = its own pid),
and clients that run `send` as another user, or speak the socket's protocol directly.

Used by the hostile-input corpus (unit tier: helper and client are the same unprivileged
user, the operators' group is that user's own) and by tests/netns (helper as root, client
as nobody with or without a throwaway group id that no group entry names).
"""

import ast
import os
import pathlib
import socket
import subprocess
import tempfile
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
NOBODY = 65534
# Starts the helper with the socket on fd 3, as systemd does: the shell's pid is the
# helper's pid after exec, so LISTEN_PID names the helper itself.
SOCKET_ACTIVATION = 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=operators exec "$@"'


def env():
    return {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"],
            "LC_ALL": "C.UTF-8"}


def socket_dir():
    """A short directory for the socket (sun_path holds 107 bytes) that the client user can
    traverse: 0755 under /run for root, under the user's own scratch otherwise. The caller
    removes it (remove_socket_dir)."""
    parent = "/run" if os.geteuid() == 0 else os.environ.get("SYSRQ_TEST_TMP") or None
    directory = tempfile.mkdtemp(prefix="sra-ops-", dir=parent)
    os.chmod(directory, 0o755)
    return pathlib.Path(directory)


def remove_socket_dir(directory):
    for entry in pathlib.Path(directory).iterdir():
        entry.unlink()
    os.rmdir(directory)


class Helper:
    """A running helper: `path` its socket, `gid` the operators' group it checks."""

    def __init__(self, directory, config, state_dir, gid, mode=0o660, prefix=(), wrap=None):
        self.path = str(pathlib.Path(directory) / "operators.sock")
        self.gid = gid
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.path)
        if os.geteuid() == 0:
            os.chown(self.path, 0, gid)
        os.chmod(self.path, mode)
        listener.listen(16)
        fd = listener.fileno()
        helper = [PYTHON, "-m", "sysrq_appliance", "--config", str(config),
                  "--state-dir", str(state_dir), "helper", "--group", str(gid)]
        argv = [*prefix, *(wrap or ["sh", "-c", SOCKET_ACTIVATION, "sh"]), *helper]
        self.process = subprocess.Popen(argv, pass_fds=(3,), env=env(),
                                        preexec_fn=lambda: os.dup2(fd, 3),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        listener.close()   # the helper holds it now

    def stop(self):
        """Stop the helper (by its pid) once it serves (an empty request, answered by
        closing: no signal lands in its start-up); its stdout and stderr."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
            probe.settimeout(30)
            probe.connect(self.path)
            probe.send(b"")
            try:
                probe.recv(16)
            except (OSError, TimeoutError):
                pass
        self.process.terminate()
        try:
            out, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return out.decode(errors="replace"), err.decode(errors="replace")

    def client(self, *argv, user=None, groups=(), timeout=60):
        """`sysrq-appliance --helper-socket PATH ARGV...` as `user` (None: ourselves) with
        `groups` as its supplementary groups."""
        kwargs = {}
        if user is not None:
            kwargs = {"user": user, "group": user, "extra_groups": list(groups)}
        return subprocess.run([PYTHON, "-m", "sysrq_appliance", "--helper-socket", self.path,
                               *argv], capture_output=True, env=env(), timeout=timeout,
                              stdin=subprocess.DEVNULL, **kwargs)

    def raw(self, data, user=None, groups=(), timeout=30, hold=0):
        """Send one raw request message (as `user`, in a child); (answer messages, exit).
        With `hold`, the child first opens that many connections that stay silent (the
        helper serves each until its request times out) and keeps them open meanwhile."""
        code = ("import socket, sys\n"
                "held = []\n"
                "for _ in range(int(sys.argv[2])):\n"
                "    held.append(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET))\n"
                "    held[-1].connect(sys.argv[1])\n"
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
                "s.connect(sys.argv[1])\n"
                "data = sys.stdin.buffer.read()\n"
                "s.send(data) if data != b'NOTHING' else None\n"
                "while True:\n"
                "    m = s.recv(65536)\n"
                "    sys.stdout.write(repr(m) + '\\n')\n"
                "    if not m or m[:1] == b'x': break\n")
        kwargs = {}
        if user is not None:
            kwargs = {"user": user, "group": user, "extra_groups": list(groups)}
        done = subprocess.run([PYTHON, "-c", code, self.path, str(hold)], input=data, capture_output=True,
                              timeout=timeout, env=env(), **kwargs)
        messages = [ast.literal_eval(line) for line in done.stdout.decode().splitlines()]
        return messages, done


def unused_gid():
    """A group id no group entry names (the test's throwaway operators' group)."""
    import grp
    while True:
        gid = 1_500_000_000 + uuid.uuid4().int % 100_000_000
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
