"""The package as users install it: the wheel and sdist build, and the wheel works on its own.

The wheel is installed into a fresh virtual environment (no access to the source tree: the
commands run in an empty directory with the environment's own interpreter), and the three
commands a new operator runs first work from it: ``shaken --version``, ``shaken demo`` and
``shaken lab init``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from shaken import __version__

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT, cwd=out)
    return out


def test_sdist_and_wheel_build_with_the_one_version(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"shaken-{__version__}-py3-none-any.whl",
        f"shaken-{__version__}.tar.gz",
    ]
    with zipfile.ZipFile(dist / f"shaken-{__version__}-py3-none-any.whl") as wheel:
        names = wheel.namelist()
    assert "shaken/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_the_wheel_works_in_a_clean_environment(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = dist / f"shaken-{__version__}-py3-none-any.whl"
    _run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    shaken = env_dir / "bin" / "shaken"
    assert _run(shaken, "--version", cwd=work, env=clean).strip() == f"shaken {__version__}"
    demo = _run(shaken, "demo", cwd=work, env=clean)
    assert "VERIFIED" in demo and "NOT VERIFIED" in demo
    _run(shaken, "lab", "init", "lab", cwd=work, env=clean)
    assert (work / "lab" / "shaken.toml").is_file()
    _run(shaken, "config", "check", work / "lab" / "shaken.toml", cwd=work, env=clean)
    # The code came from the environment, not from the source tree beside it.
    where = _run(python, "-c", "import shaken; print(shaken.__file__)", cwd=work, env=clean)
    assert Path(where.strip()).is_relative_to(env_dir)
