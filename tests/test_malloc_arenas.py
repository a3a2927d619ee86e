"""The server caps glibc's malloc arenas at start (service/malloc_arenas.py), unless told
otherwise through ``MALLOC_ARENA_MAX``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.malloc_arenas import ARENAS, limit_malloc_arenas

# In a fresh process (the cap is process-wide): cap or not, let 8 threads allocate, then count
# the heaps (arenas) glibc's malloc_info reports.
_PROBE = """
import ctypes, ctypes.util, sys, tempfile, threading
from service.malloc_arenas import limit_malloc_arenas
capped = limit_malloc_arenas() if sys.argv[1] == "cap" else None
def allocate():
    kept = [bytearray(1000) for _ in range(20000)]
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = tempfile.NamedTemporaryFile(suffix=".xml", delete=False).name
handle = libc.fopen(out.encode(), b"w")
libc.malloc_info(0, handle)
libc.fclose(handle)
print(capped, open(out).read().count("<heap nr="))
"""


def _probe(mode: str, env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    capped, heaps = done.stdout.split()
    return capped, int(heaps)


def test_the_cap_holds_the_arenas_of_many_threads() -> None:
    assert sys.platform == "linux"  # the service's deployments: glibc (Debian's image)
    capped, heaps = _probe("cap", {})
    assert capped == "True" and heaps <= ARENAS  # 6 here without the cap


def test_an_explicit_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "3")
    assert limit_malloc_arenas() is False
    capped, heaps = _probe("cap", {"MALLOC_ARENA_MAX": "3"})
    assert capped == "False" and heaps <= 3
