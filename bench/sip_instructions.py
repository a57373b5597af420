"""Instructions per SIP call through the real codec and redirect handler, counted with callgrind.

``bench/instructions.py`` counts the core recipe paths; this counts what the SIP adapter adds
around them, on the path a UDP worker runs: the INVITE's bytes parsed, the handler's answer
(profile, transaction, sign or warm verify, decision, the 302, the call record), the answer's
bytes, then the ACK absorbed from its bytes. The lab's real configuration, keys and a warm
certificate cache are used; the ECDSA operation is stubbed out (its cost is OpenSSL's, counted
by ``bench/instructions.py``), so what is left is the Python work this adapter controls.

    .venv/bin/python bench/sip_instructions.py [--calls 1000]

Each case runs under ``valgrind --tool=callgrind`` twice, with N calls and with 0 (the same
set-up, the same requests built), and prints the difference divided by N. Needs valgrind
(Debian package); takes about two minutes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from request_instructions import count  # bench/request_instructions.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    from shaken.toolkit.lab import init_lab

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "lab"
        init_lab(directory, now=datetime.now(UTC))
        for mode in ("verify", "sign"):
            # The child is request_instructions.py's SIP case with the ECDSA stubbed out.
            total = count(f"sip-{mode}-python", args.calls, args.calls, directory)
            base = count(f"sip-{mode}-python", 0, args.calls, directory)
            print(f"sip_{mode}_instructions_per_call={(total - base) // args.calls}")


if __name__ == "__main__":
    main()
