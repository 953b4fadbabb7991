"""The public Python API (docs/API.md): every way in validates, results are typed,
progress reaches a callback.

A manifest built from a dict, by ``Manifest(...)``, ``Manifest.model_validate`` or
``model_validate_json`` is refused for everything a manifest file is refused for
(the checks of parse_manifest: inline secrets, a destination inside its source,
duplicate names, unknown schemes, ...). Runs are real: local trees, one object made
to fail by a directory standing where its copy must go.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamove import api
from datamove.manifest.model import Manifest
from tests.conftest import cli

UNSAFE: dict[str, tuple[Any, str]] = {
    # case: (a change to a good manifest, the words the refusal must contain)
    "destination inside source": (
        lambda d, src, dst: d["datasets"][0]["destination"].update(url=str(src / "out")),
        "datasets[0].destination.url: lies inside the source"),
    "same location": (
        lambda d, src, dst: d["datasets"][0]["destination"].update(url=str(src)),
        "datasets[0].destination.url: is the same location as the source"),
    "inline secret": (
        lambda d, src, dst: d["datasets"][0]["source"].update(
            options={"secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}),
        "datasets[0].source.options.secret_access_key: looks like a credential"),
    "duplicate dataset names": (
        lambda d, src, dst: d["datasets"].append(
            {**d["datasets"][0], "destination": {"url": str(dst) + "-2"}}),
        "datasets[1].name: dataset name 'd' is already used by datasets[0]"),
    "unknown scheme": (
        lambda d, src, dst: d["datasets"][0]["destination"].update(url="nosuch://bucket/x"),
        "datasets[0].destination.url: unknown storage scheme 'nosuch'"),
    "bad dataset name": (
        lambda d, src, dst: d["datasets"][0].update(name="../escape"),
        "datasets[0].name"),
    "unknown key": (
        lambda d, src, dst: d["datasets"][0].update(destinaton={"url": "/x"}),
        "datasets[0].destinaton: unknown key"),
}


def good(src: Path, dst: Path, ledger: Path) -> dict[str, Any]:
    return {"version": 1, "name": "api", "ledger": str(ledger),
            "datasets": [{"name": "d", "source": {"url": str(src)},
                          "destination": {"url": str(dst)}}]}


def entries(data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Every public way to turn data into a Manifest."""
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return {
        "api.manifest_from_dict": lambda: api.manifest_from_dict(data),
        "api.load_manifest": lambda: api.load_manifest(file),
        "Manifest(**data)": lambda: Manifest(**data),
        "Manifest.model_validate": lambda: Manifest.model_validate(data),
        "Manifest.model_validate_json": lambda: Manifest.model_validate_json(json.dumps(data)),
    }


@pytest.mark.parametrize("case", list(UNSAFE))
def test_an_unsafe_manifest_is_refused_through_every_public_entry(tmp_path, case):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    change, words = UNSAFE[case]
    data = good(src, dst, tmp_path / "ledger")
    change(data, src, dst)
    for name, build in entries(data, tmp_path).items():
        with pytest.raises(api.ManifestError) as caught:
            build()
        assert words in str(caught.value), (name, str(caught.value))
        assert caught.value.exit_code == api.EXIT_BAD_INPUT
        assert "wJalrXUtnFEMI" not in str(caught.value)  # a secret is never echoed


def test_a_safe_manifest_loads_the_same_from_a_dict_and_from_a_file(tmp_path):
    (tmp_path / "src").mkdir()
    data = {"version": 1, "name": "api",  # relative paths, anchored where the file is
            "datasets": [{"name": "d", "source": {"url": "src"},
                          "destination": {"url": "dst/"}}]}
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump(data))
    from_file = api.load_manifest(file)
    from_dict = api.manifest_from_dict(data, base_dir=tmp_path)
    assert from_dict.datasets == from_file.datasets and from_dict.ledger == from_file.ledger
    assert from_dict.datasets[0].source.url == str(tmp_path / "src")
    assert from_dict.sha256 and from_dict.path == "<manifest>"
    # A Manifest built directly is checked too, and passes when it is safe.
    assert Manifest.model_validate(data).datasets[0].destination.url == "dst/"


def test_a_dict_gets_every_problem_at_once_with_its_field(tmp_path):
    data = {"version": 1, "name": "bad name!", "path": "/forged",
            "datasets": [{"name": "d", "source": {"url": str(tmp_path)},
                          "destination": {"url": str(tmp_path / "in")},
                          "verify": "sometimes", 7: "not text"}]}
    with pytest.raises(api.ManifestError) as caught:
        api.manifest_from_dict(data, shown="job.py")
    text = "\n".join(caught.value.problems)
    for words in ("job.py: name:", "job.py: path: unknown key", "job.py: datasets[0].verify:",
                  "job.py: datasets[0][7]: Keys should be strings"):
        assert words in text, text
    with pytest.raises(api.ManifestError, match="must be a mapping"):
        api.manifest_from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]


def tree(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


def test_run_tells_a_callback_typed_events_in_order_on_the_calling_thread(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {f"f{i}.txt": b"x" * (i + 1) for i in range(5)} | {"blocked.txt": b"never"})
    tree(dst, {"blocked.txt/inside": b"a directory stands where the copy must go"})
    manifest = api.manifest_from_dict(good(src, dst, tmp_path / "ledger"))
    events: list[api.ProgressEvent] = []
    threads: set[int] = set()

    def on_event(event: api.ProgressEvent) -> None:
        threads.add(threading.get_ident())
        events.append(event)

    report = api.run(manifest, on_event=on_event)

    assert isinstance(report, api.RunReport) and report.exit_code == api.EXIT_OBJECTS_FAILED
    assert threads == {threading.get_ident()}
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "DatasetStarted" and kinds[-1] == "DatasetFinished"
    assert kinds.count("ObjectDone") == 6 and kinds.count("ListingDone") == 1
    done = [e for e in events if isinstance(e, api.ObjectDone)]
    assert {e.key for e in done if e.status == "copied"} == {f"f{i}.txt" for i in range(5)}
    [failed] = [e for e in done if e.failed]
    assert failed.key == "blocked.txt" and failed.error
    assert [e.totals.done_objects for e in done] == list(range(1, 7))  # never backwards
    assert done[-1].totals.failed == 1 and done[-1].totals.done_bytes == 15 + 5
    finished = events[-1]
    assert isinstance(finished, api.DatasetFinished) and finished.dataset == "d"
    assert (finished.counts["copied"], finished.counts["failed"]) == (5, 1)
    assert finished.stopped is None and not finished.totals.listing

    # The typed report says the same, and serialises to what --json prints.
    ds = report.dataset("d")
    assert isinstance(ds, api.RunDataset)
    assert (ds.copied, ds.failed, ds.skipped, ds.bytes_copied) == (5, 1, 0, 15)
    assert report.failed == 1 and not report.ok
    assert [(p.key, p.status) for p in report.problems] == [("blocked.txt", "failed")]
    out = report.to_dict()
    assert out["datasets"]["d"]["copied"] == 5 and out["exit_code"] == 1
    assert json.loads(report.to_json()) == out
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.exit_code = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ds.counts["copied"] = 0  # type: ignore[index]

    # A rerun: the finished objects are skipped, so no object events; the dataset's
    # counts still arrive.
    events.clear()
    again = api.run(manifest, on_event=on_event)
    assert again.dataset("d").skipped == 5
    finished = events[-1]
    assert isinstance(finished, api.DatasetFinished) and finished.counts["skipped"] == 5


def test_a_callback_that_raises_is_logged_and_the_run_goes_on(tmp_path, caplog):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": b"1", "b": b"2"})
    manifest = api.manifest_from_dict(good(src, dst, tmp_path / "ledger"))

    def broken(event: api.ProgressEvent) -> None:
        raise RuntimeError("listener bug")

    report = api.run(manifest, on_event=broken)
    assert report.ok and report.dataset("d").copied == 2
    assert (dst / "a").read_bytes() == b"1"
    assert "progress listener" in caplog.text and "listener bug" in caplog.text


def test_plan_and_verify_return_their_typed_reports(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": b"12", "b": b"345"})
    manifest = api.manifest_from_dict(good(src, dst, tmp_path / "ledger"))
    planned = api.plan(manifest)
    assert isinstance(planned, api.PlanReport)
    assert (planned.dataset("d").copy, planned.dataset("d").bytes_to_copy) == (2, 5)
    assert planned.ok  # a plan never fails for objects
    assert "total" in planned.costs["d"].to_dict()  # docs/COST.md
    assert planned.to_dict()["datasets"]["d"]["cost"] == planned.costs["d"].to_dict()
    api.run(manifest)
    (dst / "b").write_bytes(b"XYZ")  # same size, other bytes
    checked = api.verify(manifest)
    assert isinstance(checked, api.VerifyReport)
    ds = checked.dataset("d")
    assert isinstance(ds, api.VerifyDataset)
    assert (ds.matched, ds.differs, ds.missing) == (1, 1, 0)
    assert checked.exit_code == api.EXIT_OBJECTS_FAILED
    with pytest.raises(KeyError, match="no dataset named 'x'"):
        checked.dataset("x")


def test_the_cli_json_is_the_typed_reports_serialisation(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"a": b"12"})
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump(good(src, dst, tmp_path / "ledger")))
    shown = json.loads(cli("run", str(file), "--json").stdout.splitlines()[-1])
    typed = api.plan(api.load_manifest(file)).to_dict()  # after the run: all skipped
    assert shown["datasets"]["d"]["copied"] == 1 and typed["datasets"]["d"]["skip"] == 1
    assert list(shown) == [k for k in typed if k in shown]  # one serialiser, one key order
    assert list(shown["datasets"]["d"])[:7] == ["source", "destination", "copied", "skipped",
                                                "verified", "repaired", "failed"]


def test_the_public_names_exist_and_the_package_ships_its_types():
    import tomllib

    import datamove

    assert all(hasattr(api, name) for name in api.__all__)
    assert (Path(datamove.__file__).parent / "py.typed").is_file()
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["datamove"]


def test_sync_with_delete_tells_deletions_before_the_dataset_finishes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src, {"keep": b"1"})
    tree(dst, {"only-here": b"22"})
    manifest = api.manifest_from_dict(good(src, dst, tmp_path / "ledger"))
    events: list[api.ProgressEvent] = []
    report = api.sync(manifest, delete=True, on_event=events.append)
    assert isinstance(report, api.RunReport) and report.ok
    assert not (dst / "only-here").exists() and (dst / "keep").read_bytes() == b"1"
    done = {(e.key, e.status) for e in events if isinstance(e, api.ObjectDone)}
    assert done == {("keep", "copied"), ("only-here", "deleted")}
    finished = events[-1]
    assert isinstance(finished, api.DatasetFinished)
    assert (finished.counts["copied"], finished.counts["deleted"]) == (1, 1)
    assert report.dataset("d").counts["deleted"] == 1
