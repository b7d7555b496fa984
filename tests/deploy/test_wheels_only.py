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


def test_wheel_built_from_the_docker_context_ships_the_example_config(tmp_path: Path) -> None:
    """The Dockerfile's build step on exactly what .dockerignore lets in: the wheel carries
    bot/config.example.yaml as a real file, so `init-config` works in the image."""
    import shutil
    import zipfile

    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "config.example.yaml"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "bot",
        context / "bot",
        symlinks=True,  # as Docker's COPY does
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    assert (context / "bot/config.example.yaml").is_symlink()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            f"--wheel-dir={tmp_path / 'dist'}",
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("matrix_chaperone-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("bot/config.example.yaml").decode("utf-8")
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        assert "chaperone = bot.__main__:main" in archive.read(entry_points).decode()
    assert shipped == (ROOT / "config.example.yaml").read_text("utf-8")
