"""Nothing is written or read outside its root (docs/SECURITY.md).

* Keys an object store allows but a path must not (``..``, ``/abs``, ``a//b``,
  ``./``, backslashes) fail their object with ``unsafe key: ...``, recorded as
  failed in the ledger and the audit log, exit 1; the rest of the dataset is
  copied; nothing appears outside the destination root (plain and encrypted
  datasets, ``verify`` and ``restore --to``).
* Symbolic links: skipped and counted by default; ``follow`` and ``copy-link``
  on request; a loop or a dangling link fails one entry, not the dataset; a link
  planted inside a destination is never written through.
* File modes: copies keep the source's permission bits, restores and decrypted
  files are private (0600).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from datamove import api
from datamove.errors import UnsafePath
from datamove.ledger.tables import Ledger, LedgerWriter
from datamove.manifest.model import load_manifest
from datamove.stores.core import Location, list_entries
from datamove.stores.safepath import key_problem, reused_dirs
from datamove.stores.writers import atomic_writer
from tests.conftest import s3_location, write_manifest
from tests.lifecycle_helpers import audit_events, object_rows

UNSAFE = ["../escape.txt", "a/../../escape.txt", "/abs.txt", "./dot.txt", "d//x.txt",
          "d/./x.txt", "..", "d/..", "back\\slash.txt", "..\\..\\win.txt", "nul\0.txt"]
SAFE = ["a", "a/b.c", "..a", "a..", ".hidden/x", "a b/c", "ünï/ß", "d/x.txt", "x...y"]


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_named(key):
    assert key_problem(key) is not None


@pytest.mark.parametrize("key", SAFE)
def test_ordinary_keys_are_safe(key):
    assert key_problem(key) is None


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# --- keys from an object store -------------------------------------------------------

S3_KEYS = {  # relative to the source prefix "src/"
    "good/a.txt": b"good a",
    "d/x.txt": b"the real d/x",
    "d//x.txt": b"an alias of d/x",
    "d/./x.txt": b"another alias",
    "../../escape.txt": b"escaped two levels",
    "a/../../../escape-deep.txt": b"escaped three levels",
    "/abs.txt": b"absolute",
    "back\\..\\..\\win.txt": b"windows traversal",
}


@pytest.fixture
def traversal_bucket(moto_server):
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    for key, data in S3_KEYS.items():
        client.put_object(Bucket=bucket, Key="src/" + key, Body=data)
    return bucket


def _s3_manifest(tmp_path: Path, moto_server, bucket: str, dst: Path, **extra) -> Path:
    return write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": s3_location(moto_server, bucket, "src/"),
        "destination": {"url": str(dst)}, **extra}])


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_s3_keys_that_leave_the_root_fail_alone_and_nothing_escapes(
        tmp_path, moto_server, traversal_bucket, encrypted):
    outside = tmp_path / "a" / "b"
    dst = outside / "c" / "dst"  # escapes would land in a, a/b or /
    extra = {}
    if encrypted:
        from datamove.age import X25519Identity

        (tmp_path / "r.txt").write_text(X25519Identity.generate().recipient.encode() + "\n")
        extra = {"encrypt": {"recipients_file": str(tmp_path / "r.txt")}}
    manifest = load_manifest(_s3_manifest(tmp_path, moto_server, traversal_bucket, dst,
                                          **extra))
    report = api.run(manifest)

    unsafe = {k for k in S3_KEYS if key_problem(k)}
    assert len(unsafe) == 6
    suffix = ".age" if encrypted else ""
    assert files_under(tmp_path / "a") == {f"b/c/dst/good/a.txt{suffix}",
                                           f"b/c/dst/d/x.txt{suffix}"}
    assert not Path("/abs.txt").exists()
    if not encrypted:
        assert (dst / "d" / "x.txt").read_bytes() == b"the real d/x"  # never aliased
    assert report.exit_code == 1
    counts = report.dataset("d").counts
    assert (counts["copied"], counts["failed"]) == (2, 6)
    failed = {p.key: p.error for p in report.problems}
    assert set(failed) == unsafe
    assert all(m.startswith("unsafe key") or "unsafe key" in m for m in failed.values())

    ledger = tmp_path / ".datamove" / "ledger"
    rows = {r["key"]: r for r in object_rows(ledger)}
    assert {k for k, r in rows.items() if r["status"] == "failed"} == unsafe
    assert all("unsafe key" in rows[k]["error"] for k in unsafe)
    failed_events = {e["key"] for e in audit_events(ledger, "object.failed")}
    assert failed_events == unsafe

    # verify reads nothing outside the root either: the same keys fail there
    checked = api.verify(manifest)
    assert {p.key for p in checked.problems if "unsafe key" in p.error} == unsafe


def test_a_generic_store_listing_dot_dot_or_empty_directories_fails_them_alone(tmp_path):
    """Through the generic fsspec path, a key "sub/../../../x" lists a directory ".."
    and "a//b" the directory itself again: neither is descended into (which recursed
    until Python gave up and stopped the whole dataset); each fails, the rest copies."""
    from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

    fs = MemoryFileSystem()
    fs.pipe("/hostile-src/ok.txt", b"ok")
    for key in ("sub/../../../escape.txt", "a//b.txt"):
        fs.store[f"/hostile-src/{key}"] = MemoryFile(fs, f"/hostile-src/{key}", b"evil")
    dst = tmp_path / "a" / "b" / "dst"
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "memory://hostile-src/"},
         "destination": {"url": str(dst)}}]))
    try:
        report = api.run(manifest)
    finally:
        for key in list(fs.store):
            if key.startswith("/hostile-src/"):
                del fs.store[key]
    assert files_under(tmp_path / "a") == {"b/dst/ok.txt"}
    assert report.exit_code == 1
    failed = {p.key: p.error for p in report.problems}
    assert set(failed) == {"sub/../", "a//"}
    assert all(error.startswith("unsafe directory name") for error in failed.values())


def test_restore_never_writes_a_recorded_key_outside_its_target(tmp_path):
    src, dst, to = tmp_path / "src", tmp_path / "dst", tmp_path / "x" / "y" / "to"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"fine")
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(dst)}}]))
    assert api.run(manifest).exit_code == 0
    # A ledger row with a hostile key (a tampered ledger, or one written by an old
    # version): read at dst/evil/../../dst/ok.txt (which exists), it would be
    # written to to/evil/../../dst/ok.txt, outside the target.
    (dst / "evil").mkdir()
    hostile = "evil/../../dst/ok.txt"
    ledger = Ledger(str(tmp_path / ".datamove" / "ledger"))
    row = dict(object_rows(tmp_path / ".datamove" / "ledger")[0])
    row.update(key=hostile, run_id="forged", destination_url=str(dst) + "/" + hostile)
    writer = LedgerWriter(ledger, "forged")
    writer.add(row)
    writer.flush()

    from datamove.commands.restore import restore

    report = restore(manifest, "d", str(to))
    assert report.exit_code == 1
    assert [p.key for p in report.problems] == [hostile]
    assert "unsafe key" in report.problems[0].error
    assert files_under(tmp_path / "x") == {"y/to/ok.txt"}


def test_writers_refuse_unsafe_keys_before_writing(tmp_path):
    root = tmp_path / "r" / "root"
    for key in ("../x", "a//b", "/etc/x"):
        with pytest.raises(UnsafePath, match="unsafe key"), \
                atomic_writer(Location.of(str(root)), key, part_size=5 << 20):
            pytest.fail("a writer was opened")
    assert not (tmp_path / "x").exists() and files_under(tmp_path) == set()


# --- symbolic links --------------------------------------------------------------------

@pytest.fixture
def linked_tree(tmp_path):
    """A source with a file, a link to a secret outside it, a link to an outside
    directory, a loop, a dangling link and a link to a file inside."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"outside secret")
    (outside / "dir" / "inner.txt").write_bytes(b"outside dir file")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "real.txt").write_bytes(b"real")
    (src / "sub" / "f.txt").write_bytes(b"in sub")
    (src / "hostname").symlink_to(outside / "secret.txt")
    (src / "outdir").symlink_to(outside / "dir")
    (src / "sub" / "loop").symlink_to(src)
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    (src / "alias.txt").symlink_to("real.txt")
    return src


def _links_run(tmp_path: Path, src: Path, links: str | None) -> tuple[object, Path]:
    dst = tmp_path / f"dst-{links}"
    source = {"url": str(src), **({"links": links} if links else {})}
    manifest = load_manifest(write_manifest(tmp_path / f"m-{links}.yaml", [
        {"name": "d", "source": source, "destination": {"url": str(dst)}}],
        ledger=str(tmp_path / f"ledger-{links}")))
    return api.run(manifest), dst


def test_links_are_skipped_and_counted_by_default(tmp_path, linked_tree):
    report, dst = _links_run(tmp_path, linked_tree, None)
    assert report.exit_code == 0
    assert files_under(dst) == {"real.txt", "sub/f.txt"}
    assert report.dataset("d").counts["links_skipped"] == 5
    import io

    shown = io.StringIO()
    report.render(shown)
    assert "dataset d: 5 symbolic links skipped" in shown.getvalue()


def test_links_follow_copies_targets_and_fails_loops_and_dangling_links_alone(
        tmp_path, linked_tree):
    report, dst = _links_run(tmp_path, linked_tree, "follow")
    assert report.exit_code == 1
    assert (dst / "hostname").read_bytes() == b"outside secret"
    assert (dst / "outdir" / "inner.txt").read_bytes() == b"outside dir file"
    assert (dst / "alias.txt").read_bytes() == b"real"
    problems = {p.key: p.error for p in report.problems}
    assert set(problems) == {"dangling", "sub/loop/"}
    assert "dangling symbolic link" in problems["dangling"]
    assert "loop" in problems["sub/loop/"]
    assert report.dataset("d").counts["copied"] == 5


def test_links_copy_link_stores_targets_as_rclonelink_files(tmp_path, linked_tree):
    report, dst = _links_run(tmp_path, linked_tree, "copy-link")
    assert report.exit_code == 0
    assert (dst / "alias.txt.rclonelink").read_text() == "real.txt"
    assert (dst / "hostname.rclonelink").read_text() == str(tmp_path / "outside" / "secret.txt")
    assert (dst / "sub" / "loop.rclonelink").read_text() == str(linked_tree)
    assert not any(p.is_symlink() for p in dst.rglob("*"))
    assert files_under(dst) == {"real.txt", "sub/f.txt", "alias.txt.rclonelink",
                                "hostname.rclonelink", "outdir.rclonelink",
                                "sub/loop.rclonelink", "dangling.rclonelink"}
    again, _ = _links_run(tmp_path, linked_tree, "copy-link")
    assert again.dataset("d").counts["copied"] == 0  # links are recorded like files


def test_a_link_inside_the_destination_is_never_written_through(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_bytes(b"new")
    (src / "top.txt").write_bytes(b"top")
    outside.mkdir()
    (outside / "top.txt").write_bytes(b"do not touch")
    dst.mkdir()
    (dst / "sub").symlink_to(outside)  # a directory link planted in the destination
    (dst / "top.txt").symlink_to(outside / "top.txt")  # and a file link
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(dst)}}]))
    report = api.run(manifest)
    assert report.exit_code == 1
    assert [p.key for p in report.problems] == ["sub/f.txt"]
    assert "symbolic link" in report.problems[0].error
    assert sorted(p.name for p in outside.iterdir()) == ["top.txt"]
    assert (outside / "top.txt").read_bytes() == b"do not touch"
    assert not (dst / "top.txt").is_symlink()  # the link itself was replaced
    assert (dst / "top.txt").read_bytes() == b"top"


def test_a_link_below_a_root_is_not_followed_when_reading(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", root / "d" / "f")
    location = Location.of(str(root))
    from datamove.stores.core import open_read, stat

    with pytest.raises(UnsafePath, match="symbolic link"):
        open_read(location, "d/f")
    assert stat(location, "d/f") is None
    assert [e.key for e in list_entries(location)] == []


def test_a_batch_walks_each_directory_once_and_closes_what_it_held(tmp_path):
    """Inside reused_dirs (a worker's task) a directory walked once is not walked
    again: a link swapped in for it afterwards is not written through, writes go
    to the directory that was checked, and every descriptor is closed at the end."""
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    outside.mkdir()
    location = Location.of(str(dst))
    open_fds = len(os.listdir("/proc/self/fd"))
    with reused_dirs():
        with atomic_writer(location, "sub/a.txt", part_size=1024) as writer:
            writer.write(b"a")
            writer.commit(hashlib.sha256(b"a").hexdigest(), None)
        (dst / "sub").rename(tmp_path / "checked")  # the checked directory, moved away
        (dst / "sub").symlink_to(outside)  # and a link planted in its place
        with atomic_writer(location, "sub/b.txt", part_size=1024) as writer:
            writer.write(b"b")
            writer.commit(hashlib.sha256(b"b").hexdigest(), None)
        assert len(os.listdir("/proc/self/fd")) > open_fds  # held while the block runs
    assert sorted(p.name for p in (tmp_path / "checked").iterdir()) == ["a.txt", "b.txt"]
    assert list(outside.iterdir()) == []
    assert len(os.listdir("/proc/self/fd")) == open_fds
    with pytest.raises(UnsafePath, match="symbolic link"):  # a new walk refuses the link
        atomic_writer(location, "sub/c.txt", part_size=1024).__enter__()


UNREADABLE = """
import json, sys
from datamove.stores.core import Location, list_entries
print(json.dumps([(e.key, e.problem) for e in list_entries(Location.of(sys.argv[1]))]))
"""


def test_an_unreadable_subdirectory_fails_one_entry_not_the_dataset(tmp_path):
    import json
    import subprocess
    import sys

    src = tmp_path / "src"
    (src / "closed").mkdir(parents=True)
    (src / "open.txt").write_bytes(b"x")
    (src / "closed" / "f").write_bytes(b"y")
    os.chmod(src / "closed", 0)
    # Root reads every directory: list without the capabilities that let it.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        listed = subprocess.run([*drop, sys.executable, "-c", UNREADABLE, str(src)],
                                capture_output=True, text=True, check=True)
    finally:
        os.chmod(src / "closed", 0o755)
    entries = json.loads(listed.stdout)
    assert [key for key, _ in entries] == ["closed/", "open.txt"]
    assert "cannot be read" in entries[0][1] and entries[1][1] is None


# --- file modes ------------------------------------------------------------------------

def test_copies_keep_permission_bits_restores_and_decrypts_are_private(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name, mode in (("shared.txt", 0o644), ("group.txt", 0o640), ("private.key", 0o600),
                       ("tool.sh", 0o4755)):
        (src / name).write_bytes(name.encode())
        os.chmod(src / name, mode)
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(dst)}}]))
    assert api.run(manifest).exit_code == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in dst.iterdir()}
    assert modes == {"shared.txt": 0o644, "group.txt": 0o640, "private.key": 0o600,
                     "tool.sh": 0o755}  # set-id bits are never carried over

    from datamove.commands.restore import restore

    restore(manifest, "d", str(tmp_path / "restored"))
    restored = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "restored").iterdir()}
    assert set(restored.values()) == {0o600}
    restore(manifest, "d", str(tmp_path / "restored-640"), mode=0o640)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "restored-640").iterdir()} \
        == {0o640}


def test_decrypted_files_are_private_and_ciphertext_is_not(tmp_path, monkeypatch):
    from datamove.commands.encrypt import decrypt_file, encrypt_file

    monkeypatch.setenv("DATAMOVE_PASSPHRASE", "correct horse battery staple")
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"secret payload")
    os.chmod(plain, 0o644)
    encrypt_file(str(plain), str(tmp_path / "c.age"), [], [], passphrase=True)
    decrypt_file(str(tmp_path / "c.age"), str(tmp_path / "out.txt"), [], passphrase=True)
    assert (tmp_path / "out.txt").read_bytes() == b"secret payload"
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o600
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "c.age").stat().st_mode) == 0o666 & ~umask


def test_tabular_partition_values_never_leave_the_table(tmp_path):
    """Partition values become directory names: delta-rs escapes '/' and prefixes
    'column=', so hostile values stay inside the table and read back intact."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    src, table = tmp_path / "src", tmp_path / "t" / "u" / "table"
    src.mkdir()
    hostile = ["../../escape", "..", "/abs", "a/../../b", "ok"]
    pq.write_table(pa.table({"p": hostile, "v": list(range(5))}), src / "rows.parquet")
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "t", "source": {"url": str(src)},
         "destination": {"url": str(table), "format": "delta", "partition_by": ["p"]}}]))
    assert api.run(manifest).exit_code == 0
    assert {p.parent for p in (tmp_path / "t").rglob("*.parquet")} <= \
        {d for d in table.iterdir() if d.is_dir()}
    assert files_under(tmp_path / "t") == {f"u/table/{f}" for f in files_under(table)}
    read = DeltaTable(str(table)).to_pyarrow_table().sort_by("v").column("p").to_pylist()
    assert read == hostile
