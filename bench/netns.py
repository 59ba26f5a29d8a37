"""A throwaway network namespace for the benchmarks: unique name, loopback only, removed
by that exact name when done."""

import contextlib
import subprocess
import uuid


@contextlib.contextmanager
def netns():
    name = f"sra-bench-{uuid.uuid4().hex[:12]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
