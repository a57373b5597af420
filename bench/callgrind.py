"""Run a benchmark's child under ``valgrind --tool=callgrind`` and read its instruction count.

Shared by the instruction benchmarks (``instructions.py``, ``sip_instructions.py``,
``request_instructions.py``): each runs itself as the child with ``--child MODE`` and the
arguments it needs, N calls and 0 calls, and reports the difference divided by N.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def instructions(script: str, args: list[str]) -> int:
    """The instructions ``python script args...`` retires, with ``PYTHONHASHSEED=0`` so each
    run has the same dict layouts. :raises SystemExit: the child failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                script,
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    match = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"{' '.join(args)} failed under valgrind:\n{proc.stderr[-3000:]}")
    return int(match.group(1).replace(",", ""))
