"""The image installs from wheels only: every runtime requirement has a manylinux wheel for
CPython 3.12 (python-olm: cp311/cp312 only), so no compiler is needed. Asks the package
registry (CI has it); a few seconds, the files land in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER, ROOT

pytestmark = pytest.mark.network


def runtime_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    requirements: list[str] = project["dependencies"]
    return requirements


def test_runtime_requirements_leave_pgserver_to_the_demo_extra() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert not any(r.startswith("pgserver") for r in project["dependencies"])
    for extra in ("demo", "test"):
        assert any(r.startswith("pgserver") for r in project["optional-dependencies"][extra])


def test_image_python_is_the_one_olm_has_wheels_for() -> None:
    assert "python:3.12." in (DOCKER / "Dockerfile").read_text("utf-8")


def test_pip_download_only_binary_for_python_312_manylinux(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(runtime_requirements()) + "\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version=3.12",
            "--implementation=cp",
            "--abi=cp312",
            "--platform=manylinux2014_x86_64",
            f"--dest={tmp_path / 'wheels'}",
            f"--requirement={requirements}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = sorted(p.name for p in (tmp_path / "wheels").iterdir())
    assert wheels and all(name.endswith(".whl") for name in wheels), wheels
    olm = [name for name in wheels if name.startswith("python_olm-")]
    assert olm and "-cp312-cp312-manylinux" in olm[0], olm
