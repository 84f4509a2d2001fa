"""The libzmq baselines in C (floor.c), built at bench time into a temporary
directory: how far the Python echo and floor are from libzmq itself.

build() compiles floor.c once per process with the C compiler ($CC, else cc)
against the libzmq pyzmq itself uses (its bundled pyzmq.libs copy, else the
system's -lzmq), with zmq.h if installed and floor.c's own few declarations
if not; where that cannot be done it raises Unavailable with the reason, which
the suites print and skip those rows for.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import zmq

SOURCE = Path(__file__).with_name("floor.c")


class Unavailable(RuntimeError):
    """The C baselines cannot be built here; the message says why."""


_built: dict[str, str | Unavailable] = {}


def libzmq_flags() -> list[str]:
    bundled = sorted(Path(zmq.__file__).resolve().parent.parent.joinpath("pyzmq.libs")
                     .glob("libzmq*.so*"))
    if bundled:
        return [str(bundled[0]), f"-Wl,-rpath,{bundled[0].parent}"]
    return ["-lzmq"]


def build() -> str:
    """The path of the built floor.c executable (raises Unavailable)."""
    if "floor" not in _built:
        try:
            _built["floor"] = _compile()
        except Unavailable as reason:
            _built["floor"] = reason
    result = _built["floor"]
    if isinstance(result, Unavailable):
        raise result
    return result


def _compile() -> str:
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        raise Unavailable(f"no C compiler ({os.environ.get('CC') or 'cc'}) on PATH")
    if not SOURCE.exists():
        raise Unavailable(f"{SOURCE} is not installed")
    directory = tempfile.mkdtemp(prefix="rab-c-")
    atexit.register(shutil.rmtree, directory, True)
    binary = os.path.join(directory, "floor")
    done = subprocess.run([compiler, "-O2", "-o", binary, str(SOURCE), *libzmq_flags()],
                          capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
        raise Unavailable(f"{compiler} could not build {SOURCE.name} against libzmq: {lines[-1]}")
    return binary
