"""What compiling the call path's own Python with Cython would buy: instructions, both ways.

Issue "halve the CPU per SIP and REST request" allows a compiled helper only where pure Python
demonstrably cannot reach the goals. The cheapest compiled helper there is, one that keeps a
single source for every rule, is Cython compiling the very modules the call path runs (pure
Python mode: the same ``.py`` files, no ``.pyx`` copy of any check). This measures it:

1. copies ``src/shaken`` twice into a temporary directory, as it is now;
2. compiles :data:`HOT_PATH` in one copy with ``cythonize -i`` (each module becomes an
   extension beside its ``.py``; Python imports the extension first) and checks that every
   one of them is then imported from its extension;
3. runs ``bench/request_instructions.py`` (SIP and REST requests, ECDSA included) and
   ``bench/instructions.py`` (the library's warm verify and sign, ECDSA stubbed) on each copy
   and prints the counts side by side, with what is left once the raw ECDSA is taken away.

    .venv/bin/python -m pip install cython   # not a dependency of shaken: this script only
    .venv/bin/python bench/compiled.py [--calls 200] [--json]

Needs valgrind and a C compiler with the Python headers; takes about fifteen minutes (the two
copies are counted side by side: instruction counts do not depend on the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"

#: The modules a warm SIP or REST verification and a signing run, by file under src/.
HOT_PATH = (
    "shaken/core/context.py",
    "shaken/core/errors.py",
    "shaken/core/fastinit.py",
    "shaken/core/identity.py",
    "shaken/core/jws.py",
    "shaken/core/passport.py",
    "shaken/core/policy.py",
    "shaken/core/reasons.py",
    "shaken/core/result.py",
    "shaken/core/sign.py",
    "shaken/core/tn.py",
    "shaken/core/verify.py",
    "shaken/core/x5u.py",
    "shaken/services/_bounded.py",
    "shaken/services/calllog.py",
    "shaken/services/cert_cache.py",
    "shaken/services/signing.py",
    "shaken/services/trust.py",
    "shaken/services/verification.py",
    "shaken/adapters/sip/codec.py",
    "shaken/adapters/sip/handler.py",
    "shaken/adapters/sip/stats.py",
    "shaken/adapters/sip/transactions.py",
    "shaken/adapters/sip/udp.py",
    "shaken/adapters/http/app.py",
    "shaken/adapters/http/atis.py",
    "shaken/adapters/http/auth.py",
    "shaken/adapters/http/fields.py",
    "shaken/adapters/http/requests.py",
)


def _copy(into: Path) -> Path:
    tree = into / "src"
    shutil.copytree(SRC / "shaken", tree / "shaken", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def _compile(tree: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-q", "-j", "2", *HOT_PATH],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"cythonize failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    names = [path.removesuffix(".py").replace("/", ".") for path in HOT_PATH]
    check = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    origin = importlib.import_module(name).__file__ or ''\n"
        "    if not origin.endswith('.so'):\n"
        "        sys.exit(f'{name} imported from {origin}, not from its extension')\n"
    )
    _run(tree, ["-c", check])


def _run(tree: Path, args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _count(tree: Path, calls: int) -> dict[str, int]:
    requests = json.loads(
        _run(tree, [str(BENCH / "request_instructions.py"), "--calls", str(calls), "--json"])
    )
    library = _run(tree, [str(BENCH / "instructions.py"), "--calls", str(calls * 10)])
    out = {name: value for name, value in requests.items() if not name.endswith("_ratio")}
    for name, value in re.findall(r"^(verify|sign)_instructions_per_call=(\d+)$", library, re.M):
        out[f"library-{name}"] = int(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    try:
        import Cython
    except ImportError:
        raise SystemExit(
            "Cython is not installed: .venv/bin/python -m pip install cython"
        ) from None
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        pure = _copy(Path(tmp) / "pure")
        compiled = _copy(Path(tmp) / "compiled")
        _compile(compiled)
        with ThreadPoolExecutor(2) as pool:
            runs = pool.map(lambda tree: _count(tree, args.calls), (pure, compiled))
            counts = dict(zip(("pure", "compiled"), runs, strict=True))
    rows = []
    for name in counts["pure"]:
        if name.startswith("raw-"):
            continue
        # The library counts have ECDSA stubbed out; the request counts include the raw op.
        raw = 0 if name.startswith("library-") else counts["pure"][f"raw-{name.split('-')[1]}"]
        before, after = counts["pure"][name] - raw, counts["compiled"][name] - raw
        rows.append((name, before, after, 1 - after / before))
    if args.json:
        print(json.dumps({"cython": Cython.__version__, "counts": counts, "modules": HOT_PATH}))
        return
    print(f"Cython {Cython.__version__}, {len(HOT_PATH)} modules compiled; instructions per call")
    print(f"{'case (raw ECDSA taken away)':<30}{'pure':>12}{'compiled':>12}{'cut':>8}")
    for name, before, after, cut in rows:
        print(f"{name:<30}{before:>12,}{after:>12,}{cut:>8.1%}")


if __name__ == "__main__":
    main()
