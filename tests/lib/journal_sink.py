"""journald's socket as the tests see it: what libsystemd really sends, read back.

libsystemd (python3-systemd's journal.send) writes each entry as one datagram to
/run/systemd/journal/socket, in journald's native protocol. The sink binds its own datagram
socket in a scratch directory, and `wrap()` runs a command in a private mount namespace
where /run/systemd/journal is that directory, so the command's entries reach the sink
instead of any journald (the host's journal, if it has one, is untouched). Root only:
mount namespaces.

Native protocol (systemd's JOURNAL_NATIVE_PROTOCOL): fields one after the other, each
either `NAME=value\\n`, or `NAME\\n` + the value's length (64-bit little endian) + the value
+ `\\n` (values holding a newline).
"""

import os
import pathlib
import socket
import struct

# Cover /run/systemd with a small tmpfs in this namespace only, mount the sink's directory
# as its journal/, run the command. (/run/systemd must exist as a mount point: a host
# without it gets an empty one for the sink's lifetime.)
_WRAP = ('set -e; mount -t tmpfs -o mode=0755,size=1m sra-journal /run/systemd; '
         'mkdir /run/systemd/journal; mount --bind "$1" /run/systemd/journal; shift; '
         'exec "$@"')


def parse(datagram):
    """One native-protocol datagram as {name: value} (bytes values; a name seen twice keeps
    every value, in a list)."""
    fields, rest = {}, datagram
    while rest:
        line_end = rest.index(b"\n")
        head = rest[:line_end]
        if b"=" in head:
            name, value = head.split(b"=", 1)
            rest = rest[line_end + 1:]
        else:
            name = head
            (size,) = struct.unpack("<Q", rest[line_end + 1:line_end + 9])
            value = rest[line_end + 9:line_end + 9 + size]
            if rest[line_end + 9 + size:line_end + 10 + size] != b"\n":
                raise ValueError("native journal field without its closing newline")
            rest = rest[line_end + 10 + size:]
        key = name.decode("ascii")
        if key in fields:
            previous = fields[key]
            fields[key] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            fields[key] = value
    return fields


class JournalSink:
    def __init__(self, directory):
        self.dir = pathlib.Path(directory) / "journal"
        self.dir.mkdir(mode=0o755)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.dir / "socket"))
        self.sock.setblocking(False)
        self.raw = []
        self.made_mount_point = not os.path.isdir("/run/systemd")
        if self.made_mount_point:
            os.mkdir("/run/systemd", 0o755)

    def wrap(self):
        """The argv prefix that runs a command with its journal entries sent here."""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _WRAP, "sh",
                str(self.dir)]

    def entries(self, identifier=b"sysrq-appliance-audit"):
        """Every entry received so far (parsed), with SYSLOG_IDENTIFIER `identifier`."""
        while True:
            try:
                self.raw.append(self.sock.recv(1 << 20))
            except BlockingIOError:
                break
        parsed = [parse(datagram) for datagram in self.raw]
        return [e for e in parsed if e.get("SYSLOG_IDENTIFIER") == identifier]

    def close(self):
        self.sock.close()
        if self.made_mount_point:
            os.rmdir("/run/systemd")
