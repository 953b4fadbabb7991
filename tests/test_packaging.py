"""Packaging (issue 18): the licence and metadata in a built wheel, the extras and
their bounds, ``python -m datamove``, shell completion, and a core without a cloud
SDK that names the extra to install instead of failing with a traceback."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import datamove

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_the_licence_is_apache_2_and_named_by_an_spdx_expression() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639
    # the test data keep their own licences beside them
    for folder in ("age-vectors", "openlineage"):
        assert (REPO / "tests" / "data" / folder / "LICENSE").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the sources by the build backend's floor
    (--no-build-isolation: the dev extra's setuptools; nothing is downloaded)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "datamove", source / "datamove",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = base / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "-w", str(out),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [built] = out.glob("datamove-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_the_wheel_carries_the_licence_and_its_expression(wheel: zipfile.ZipFile) -> None:
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    [licence] = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(licence) == (REPO / "LICENSE").read_bytes()
    assert "Programming Language :: Python :: 3 :: Only" in meta.get_all("Classifier")
    assert meta["Version"] == datamove.__version__
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "datamove = datamove.cli:entry" in wheel.read(entry_points).decode()


def test_the_core_needs_no_cloud_sdk_and_each_cloud_has_its_extra(
        wheel: zipfile.ZipFile) -> None:
    meta = _metadata(wheel)
    assert {"s3", "gcs", "azure", "sftp", "all", "dev"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    core = {_name(r) for r in requires if "extra ==" not in r}
    clouds = {"s3fs", "gcsfs", "adlfs", "azure-storage-blob", "paramiko", "boto3", "botocore"}
    assert not core & clouds, f"the core requires {core & clouds}"

    def extra(name: str) -> set[str]:
        return {_name(r) for r in requires if re.search(rf"extra == ['\"]{name}['\"]", r)}

    assert extra("s3") == {"s3fs"}  # botocore comes with it; boto3 is for tests only
    assert "gcsfs" in extra("gcs") and "adlfs" in extra("azure")
    assert "paramiko" in extra("sftp")
    assert "boto3" in extra("dev") and "boto3" not in core
    assert any(r.startswith("datamove[") and "extra == \"all\"" in r.replace("'", '"')
               for r in requires)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower()


def _floor(requirements: list[str], name: str) -> str:
    [found] = [r for r in requirements if _name(r) == name]
    match = re.search(r">=\s*([\w.]+)", found)
    assert match, f"{found}: no lower bound"
    return match.group(1)


def test_fsspec_s3fs_and_gcsfs_share_one_calendar_floor() -> None:
    """s3fs pins fsspec exactly and gcsfs needs fsspec from its own release line: one
    floor for the three, so no combination the bounds allow is one pip must refuse."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    floors = {_floor(project["dependencies"], "fsspec"), _floor(extras["s3"], "s3fs"),
              _floor(extras["gcs"], "gcsfs")}
    assert len(floors) == 1, floors
    build = PYPROJECT["build-system"]["requires"]
    assert _floor(build, "setuptools") == "77"  # PEP 639 license expressions


def test_python_m_datamove_prints_the_version() -> None:
    done = subprocess.run([sys.executable, "-m", "datamove", "--version"], capture_output=True,
                          text=True, env=ENV, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"datamove, version {datamove.__version__}"
    assert PYPROJECT["project"]["version"] == datamove.__version__


def _complete(**env: str) -> subprocess.CompletedProcess[str]:
    """The program as the console script runs it (prog name "datamove"), with click's
    completion variables set."""
    return subprocess.run(
        [sys.executable, "-c", "from datamove.cli import main; main(prog_name='datamove')"],
        capture_output=True, text=True, env={**ENV, **env}, timeout=60)


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _datamove_completion datamove"),
    ("zsh", "compdef _datamove_completion datamove"),
    ("fish", "complete --no-files --command datamove"),
])
def test_shell_completion_scripts_are_produced(shell: str, marker: str) -> None:
    """README, "Shell completion": eval "$(_DATAMOVE_COMPLETE=bash_source datamove)"."""
    done = _complete(_DATAMOVE_COMPLETE=f"{shell}_source")
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout


def test_completion_completes_commands_and_options() -> None:
    commands = _complete(_DATAMOVE_COMPLETE="bash_complete", COMP_WORDS="datamove au",
                         COMP_CWORD="1")
    assert commands.returncode == 0 and commands.stdout.split() == ["plain,audit"]
    options = _complete(_DATAMOVE_COMPLETE="bash_complete",
                        COMP_WORDS="datamove drill m.yaml --no-p", COMP_CWORD="3")
    assert options.stdout.split() == ["plain,--no-progress"]


def _without(hidden: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``datamove ARGS`` in a Python where the modules ``hidden`` cannot be imported
    (``sys.modules[name] = None``: import raises ModuleNotFoundError and find_spec
    finds nothing, as when the package is not installed)."""
    code = ("import sys\n"
            f"for name in {hidden!r}:\n"
            "    sys.modules[name] = None\n"
            "from datamove.cli import main\n"
            f"main({list(args)!r}, prog_name='datamove')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=120)


def test_a_store_whose_client_is_missing_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: t\ndatasets:\n"
                        "  - name: d\n"
                        "    source: {url: ./src}\n"
                        "    destination: {url: s3://bucket/prefix/}\n")
    done = _without(("s3fs",), "plan", str(manifest), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "m.yaml:6" in done.stderr and "destination.url" in done.stderr
    assert "s3:// needs s3fs, which is not installed" in done.stderr
    assert "pip install 'datamove[s3]'" in done.stderr
    azure = manifest.read_text().replace("s3://bucket/prefix/", "az://container/prefix/")
    manifest.write_text(azure)
    done = _without(("adlfs", "azure"), "plan", str(manifest), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "az:// needs adlfs, azure.storage.blob, which are not installed" in done.stderr
    assert "pip install 'datamove[azure]'" in done.stderr
    # local disks need no cloud SDK at all
    manifest.write_text(azure.replace("az://container/prefix/", "./dst"))
    local = _without(("s3fs", "gcsfs", "adlfs", "azure", "paramiko", "botocore", "boto3"),
                     "run", "--no-progress", str(manifest), cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert (tmp_path / "dst" / "a.txt").read_text() == "a"


def test_a_kms_identity_without_botocore_names_the_extra(tmp_path: Path) -> None:
    identity = tmp_path / "id.kms"
    identity.write_text("datamove-kms-identity-v1\n"
                        "key-id: arn:aws:kms:eu-west-1:111122223333:key/k\n"
                        "ciphertext: AAAA\n")
    done = _without(("botocore", "boto3"), "keys", "recipient", "-i", str(identity),
                    cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "needs botocore" in done.stderr and "pip install 'datamove[s3]'" in done.stderr
