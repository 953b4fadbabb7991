"""Benchmark datamove against the tools users would pick instead, on the same data.

Every tool runs as a subprocess on identical inputs, one after the other, in the same
conditions (warm page cache, destination emptied first), and its destination is checked
afterwards (relative paths and sizes) so that a broken run cannot produce a fast number.
Wall time comes from a monotonic clock; client CPU time comes from the rusage of the
child process tree (``os.wait4``: the same numbers as a ``getrusage(RUSAGE_CHILDREN)``
delta, but per child and with its peak RSS). For S3 scenarios the CPU time of
moto_server is read from /proc, because that single Python process is the bottleneck.
The encrypted scenarios (``*-enc``: datamove with ``encrypt: true`` against an rclone
crypt remote) also decrypt a sample of each destination and compare it with the source.

Usage: benchmarks/setup.sh, then
    /work/main/.venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--repeat N]
        [--interleave]
See benchmarks/README.md for what each scenario measures and the exact peer commands.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import yaml
from report import FULL, MIB, QUICK, Profile, Result, report

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
VENV_BIN = Path(sys.executable).parent
PEERS_BIN = WORK / "peers-venv" / "bin"
THREADS = 8  # datamove engine.threads; rclone gets the same --transfers/--checkers
RCLONE_PAR = ["--transfers", str(THREADS), "--checkers", str(THREADS)]
TIMEOUT_S = 3600.0
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Hermetic: no ~/.aws files, no instance-metadata probing, no rclone user config.
    "AWS_CONFIG_FILE": str(WORK / "aws-config-none"),
    "AWS_SHARED_CREDENTIALS_FILE": str(WORK / "aws-credentials-none"),
    "AWS_EC2_METADATA_DISABLED": "true",
    "RCLONE_CONFIG": str(WORK / "rclone.conf"),
}


# --- data -----------------------------------------------------------------------------


def _expected(profile: Profile, kind: str) -> dict[str, int]:
    """Relative path -> size of the files a data set must hold."""
    if kind == "large":
        return {f"blob-{i:02d}.bin": profile.large_size for i in range(profile.large_files)}
    if kind == "tiny":
        per_dir = -(-profile.tiny_files // profile.tiny_dirs)
        return {f"d{i // per_dir:03d}/f{i:06d}.bin": profile.tiny_size
                for i in range(profile.tiny_files)}
    per_dir = -(-profile.small_files // profile.small_dirs)
    return {
        f"d{i // per_dir:03d}/f{i:05d}.bin": profile.small_size
        for i in range(profile.small_files)
    }


def listing(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under root (the check every run must pass)."""
    found: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            found[path.relative_to(root).as_posix()] = path.stat().st_size
    return found


def build_data(profile: Profile, kind: str) -> Path:
    """Create the data set deterministically (seeded), unless it is already complete.

    Large files are written in 1 MiB chunks so memory stays bounded; bytes come from
    random.randbytes with a fixed seed, so they are incompressible and reproducible.
    """
    root = WORK / "data" / profile.name / kind
    expected = _expected(profile, kind)
    if root.is_dir() and listing(root) == expected:
        return root
    print(f"building {root} ({len(expected)} files)...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(f"datamove-bench-{kind}")
    for rel, size in expected.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for offset in range(0, size, MIB):
                out.write(rng.randbytes(min(MIB, size - offset)))
    return root


# --- processes ------------------------------------------------------------------------


def measure(argv: list[str], log: Path, env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run argv to completion; return wall s, CPU s (user+sys), peak RSS MiB, exit code.

    The child gets its own session so that a timeout kills its whole tree.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
        timer = threading.Timer(TIMEOUT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def tool_env() -> dict[str, str]:
    """The same environment for every tool: test credentials, peers first on PATH.

    AWS_CA_BUNDLE is dropped: the endpoint is plain http, and rclone 1.60 refuses to
    start with it set ("LoadCustomCABundleError ... unsupported transport").
    """
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {**env, **AWS_ENV, "PATH": f"{PEERS_BIN}:{VENV_BIN}:{env['PATH']}"}


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a running process (moto_server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Moto:
    """moto_server as a subprocess: the S3 endpoint every S3 scenario shares."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(WORK / "logs" / "moto_server.log", "wb")  # noqa: SIM115 - lives with proc
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **AWS_ENV},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log.name}") from None
                time.sleep(0.2)
        self.s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")

    def fresh_bucket(self, name: str) -> str:
        """An empty bucket: delete any old one with its objects, then create it."""
        self.drop_bucket(name)
        self.s3.create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Delete a bucket and its objects, so moto's memory does not grow run after run."""
        try:
            keys = list(self.listing(name, ""))
        except self.s3.exceptions.NoSuchBucket:
            return
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=name, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        self.s3.delete_bucket(Bucket=name)

    def listing(self, bucket: str, prefix: str) -> dict[str, int]:
        """Key relative to prefix -> size of every object under prefix."""
        found: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(prefix):]] = obj["Size"]
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- tools ----------------------------------------------------------------------------

# Where a datamove run writes: a local directory or an S3 (bucket, prefix) pair.
Dest = Path | tuple[str, str]


def cp_sha256(src: Path, dst: Path) -> list[str]:
    """Plain baseline: cp -r, then sha256 of every source file checked at the destination."""
    sums = WORK / "logs" / "cp-sha256.sums"
    script = (
        'cp -r "$1/." "$2" && cd "$1" && find . -type f -print0 | xargs -0 sha256sum > "$3"'
        ' && cd "$2" && sha256sum --quiet -c "$3"'
    )
    return ["sh", "-c", script, "cp-sha256", str(src), str(dst), str(sums)]


def rclone_s3_flags(moto: Moto) -> list[str]:
    """rclone's on-the-fly S3 remote for moto; credentials come from the environment."""
    return ["--s3-provider", "Other", "--s3-endpoint", moto.url, "--s3-env-auth",
            "--s3-region", "us-east-1"]


def datamove_manifest(scenario: str, src: Path, dst: Dest, moto: Moto | None,
                      keys: Keys | None = None, verify: str = "checksum",
                      tag: str = "", processes: int = 0,
                      engine: dict[str, object] | None = None) -> Path:
    """Write the manifest for one datamove run into .work/manifests/.

    With ``keys`` the dataset is encrypted for the run's age recipient; verify
    ``full`` also gives datamove the identity, so it decrypts what it wrote.
    ``processes``: embedded worker processes instead of threads (engine.processes).
    ``engine``: more engine settings (``part_buffers: 1``, the sequential-parts A/B).
    """
    if isinstance(dst, Path):
        destination: dict[str, object] = {"url": f"{dst}/"}
    else:
        assert moto is not None
        destination = {"url": f"s3://{dst[0]}/{dst[1]}",
                       "options": {"endpoint_url": moto.url}}
    dataset: dict[str, object] = {"name": "data", "source": {"url": f"{src}/"},
                                  "destination": destination, "verify": verify}
    manifest: dict[str, object] = {"version": 1, "name": f"bench-{scenario}",
                                   "ledger": str(WORK / f"ledger-{scenario}")}
    if keys is not None:
        manifest["keys"] = {"recipients_file": str(keys.recipients),
                            **({"identity": {"file": str(keys.identity)}}
                               if verify == "full" else {})}
        dataset["encrypt"] = True
    manifest["engine"] = {"threads": THREADS, **({"processes": processes} if processes else {}),
                          **(engine or {})}
    manifest["datasets"] = [dataset]
    path = WORK / "manifests" / f"{scenario}{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def datamove_cmd(manifest: Path) -> list[str]:
    return [str(VENV_BIN / "datamove"), "run", str(manifest), "--json", "--no-progress"]


def check_datamove_json(log: Path, copied: int, skipped: int | None = None) -> None:
    """The run summary must say exit 0 and the expected counts, or the number is void."""
    lines = [ln for ln in log.with_suffix(".out").read_text().splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError("datamove printed no JSON summary")
    summary = json.loads(lines[-1])
    datasets = summary.get("datasets", {})
    if isinstance(datasets, list):
        datasets = {d.get("name"): d for d in datasets}
    counts = datasets.get("data", {})
    if summary.get("exit_code") != 0 or counts.get("copied") != copied or (
            skipped is not None and counts.get("skipped") != skipped):
        raise RuntimeError(f"datamove summary: exit_code={summary.get('exit_code')} "
                           f"counts={counts}; expected copied={copied} skipped={skipped}")


# --- scenarios ------------------------------------------------------------------------


@dataclass
class Case:
    """One tool in one scenario: how to prepare, what to run, how to check it."""

    tool: str
    argv: Callable[[], list[str]]
    prepare: Callable[[], None]
    check: Callable[[Path], None]
    env: dict[str, str] = field(default_factory=dict)  # on top of tool_env()


TRASH = WORK / "trash"
EXT4_RECENTLY_DELETED_S = 35


def compile_bytecode() -> None:
    """Compile datamove's modules once, as ``pip install`` does for an installed wheel.

    The benchmarks run this checkout's editable install, and this machine sets
    ``PYTHONDONTWRITEBYTECODE=1``: every ``datamove`` process compiled its ~100
    modules from source again, about 0.13 s of each run's start here (0.47 s
    against 0.34 s for ``import datamove.api``), which no installed datamove pays.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "datamove")],
                   check=True)


def warm(src: Path) -> None:
    """Read every source file once (not timed), so each tool starts from a warm cache.

    rclone drops the pages of every file it copied (``fadvise(DONTNEED)`` on source
    and destination, seen with strace), so whichever tool ran after it read its source
    from disk: 2-2.5× slower on 20,000 × 4 KiB here, even after a ``sync`` and a 40 s
    pause, and normal again on the run after that. Before this, datamove always ran
    right after rclone in the local scenarios.
    """
    buffer = bytearray(1 << 20)
    for directory, _, names in os.walk(src):
        for name in names:
            with open(os.path.join(directory, name), "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass


def discard(path: Path) -> None:
    """Move a finished destination aside instead of deleting it.

    Deleting tens of thousands of files makes ext4 scan its "recently deleted"
    inodes (find_inode_bit → recently_deleted) on every file created in the next
    ~30 s, which slowed whichever tool ran next by 3-6× here (seen with perf).
    Renaming frees nothing; the trash is emptied once, before the next run,
    followed by a pause (``settle_filesystem``).
    """
    if path.exists():
        TRASH.mkdir(parents=True, exist_ok=True)
        path.rename(TRASH / f"{path.name}-{time.monotonic_ns()}")


def settle_filesystem() -> None:
    """Empty the previous run's trash, then wait out ext4's recently-deleted window."""
    if TRASH.exists():
        print(f"emptying {TRASH}, then waiting {EXT4_RECENTLY_DELETED_S} s for ext4 "
              "to settle...", flush=True)
        shutil.rmtree(TRASH, ignore_errors=True)
        os.sync()
        time.sleep(EXT4_RECENTLY_DELETED_S)


def run_once(scenario: str, case: Case, i: int, result: Result,
             moto: Moto | None) -> None:
    """Prepare, run and check one case once; append its numbers to result.runs."""
    case.prepare()
    os.sync()  # earlier runs' dirty pages must not be written back during this one
    argv = case.argv()
    result.command = " ".join(argv)
    log = WORK / "logs" / f"{scenario}-{case.tool}-{i}"
    server0 = proc_cpu_s(moto.proc.pid) if moto else 0.0
    wall, cpu, rss, code = measure(argv, log, {**tool_env(), **case.env})
    server = proc_cpu_s(moto.proc.pid) - server0 if moto else None
    if code != 0:
        tail = log.with_suffix(".err").read_text(errors="replace")[-800:]
        raise RuntimeError(f"exit {code}: {tail.strip()}")
    case.check(log)
    result.runs.append({"wall_s": wall, "cpu_s": cpu, "maxrss_mib": rss,
                        **({"server_cpu_s": server} if server is not None else {})})
    print(f"  {scenario:15} {case.tool:23} {wall:8.2f} s wall {cpu:8.2f} s cpu", flush=True)


def run_cases(scenario: str, cases: list[Case], files: int, nbytes: int, repeat: int,
              moto: Moto | None, interleave: bool = False) -> list[Result]:
    """Run each case `repeat` times and keep the medians (wall and CPU separately).

    By default each case runs its repeats back to back; with ``interleave`` the cases
    take turns (A B C, A B C, ...), so that a burst of other work on the machine
    lands on every tool instead of on all runs of one.
    """
    results = {case.tool: Result(scenario, case.tool, "", files, nbytes) for case in cases}
    order = ([(i, case) for i in range(repeat) for case in cases] if interleave
             else [(i, case) for case in cases for i in range(repeat)])
    for i, case in order:
        result = results[case.tool]
        if result.error:
            continue
        try:
            run_once(scenario, case, i, result, moto)
        except Exception as exc:  # one broken tool must not hide the others' numbers
            result.error = f"{type(exc).__name__}: {exc}"
            print(f"  {scenario:15} {case.tool:23} FAILED: {result.error}", flush=True)
    for result in results.values():
        if result.error:
            continue
        for key in ("wall_s", "cpu_s", "maxrss_mib", "server_cpu_s"):
            values = [r[key] for r in result.runs if key in r]
            if values:
                setattr(result, key, statistics.median(values))
    return list(results.values())


def local_cases(scenario: str, src: Path, expected: dict[str, int]) -> list[Case]:
    """local -> local: cp + sha256sum, rclone copy, datamove (threads, the default; and
    ``engine.processes`` = the cores, where small copies use every core)."""
    out = WORK / "out" / scenario

    def fresh(tool: str) -> Callable[[], None]:
        def prepare() -> None:
            discard(out / tool)
            discard(WORK / f"ledger-{scenario}")
            (out / tool).mkdir(parents=True)
            warm(src)
        return prepare

    def same(tool: str) -> Callable[[Path], None]:
        def check(_log: Path) -> None:
            if listing(out / tool) != expected:
                raise RuntimeError(f"destination {out / tool} does not match the source")
            discard(out / tool)  # kept in place only when it failed, for inspection
        return check

    # The peers: rclone copy --checksum for local-large and local-tiny (a hash
    # of every file on both sides), plain rclone copy for local-small.
    rclone_flags = ["--checksum"] if scenario in ("local-large", "local-tiny") else []
    manifest = datamove_manifest(scenario, src, out / "datamove", None)
    procs = datamove_manifest(scenario, src, out / "datamove-processes", None,
                              tag="-processes", processes=os.cpu_count() or 2)

    def dm_check(tool: str) -> Callable[[Path], None]:
        def check(log: Path) -> None:
            check_datamove_json(log, copied=len(expected))
            same(tool)(log)
        return check

    return [
        Case("cp+sha256sum", lambda: cp_sha256(src, out / "cp+sha256sum"),
             fresh("cp+sha256sum"), same("cp+sha256sum")),
        Case("rclone", lambda: ["rclone", "copy", *rclone_flags, *RCLONE_PAR,
                                str(src), str(out / "rclone")],
             fresh("rclone"), same("rclone")),
        Case("datamove", lambda: datamove_cmd(manifest), fresh("datamove"),
             dm_check("datamove")),
        Case("datamove-processes", lambda: datamove_cmd(procs), fresh("datamove-processes"),
             dm_check("datamove-processes")),
    ]


def s3_cases(scenario: str, src: Path, expected: dict[str, int], moto: Moto) -> list[Case]:
    """local -> moto S3: s5cmd, aws s3 cp, rclone, datamove; a fresh bucket per run."""
    prefix = "bench/"

    def bucket(tool: str) -> str:
        return f"{scenario}-{tool}".replace("+", "-").lower()

    def fresh(tool: str) -> Callable[[], None]:
        def prepare() -> None:
            moto.fresh_bucket(bucket(tool))
            discard(WORK / f"ledger-{scenario}")
            warm(src)
        return prepare

    def same(tool: str) -> Callable[[Path], None]:
        def check(_log: Path) -> None:
            found = moto.listing(bucket(tool), prefix)
            moto.drop_bucket(bucket(tool))
            if found != expected:
                raise RuntimeError(f"s3://{bucket(tool)}/{prefix} holds {len(found)} objects "
                                   f"that do not match the {len(expected)} source files")
        return check

    manifest = datamove_manifest(scenario, src, (bucket("datamove"), prefix), moto)
    one_part = datamove_manifest(scenario, src, (bucket("datamove-1-part"), prefix), moto,
                                 tag="-1-part", engine={"part_buffers": 1})

    def dm_check(log: Path, tool: str = "datamove") -> None:
        check_datamove_json(log, copied=len(expected))
        same(tool)(log)

    url = f"s3://{{}}/{prefix}"
    return [
        Case("s5cmd", lambda: [str(PEERS_BIN / "s5cmd"), "--endpoint-url", moto.url, "cp",
                               f"{src}/*", url.format(bucket("s5cmd"))],
             fresh("s5cmd"), same("s5cmd")),
        Case("aws-s3-cp", lambda: [str(PEERS_BIN / "aws"), "s3", "cp", "--recursive",
                                   "--only-show-errors", "--endpoint-url", moto.url,
                                   str(src), url.format(bucket("aws-s3-cp"))],
             fresh("aws-s3-cp"), same("aws-s3-cp")),
        Case("rclone", lambda: ["rclone", "copy", *RCLONE_PAR, *rclone_s3_flags(moto),
                                str(src), f":s3:{bucket('rclone')}/{prefix}"],
             fresh("rclone"), same("rclone")),
        Case("datamove", lambda: datamove_cmd(manifest), fresh("datamove"), dm_check),
        # The same datamove with one part of an object in flight at a time (before
        # engine.part_buffers): large objects only, where parts matter.
        *([Case("datamove-1-part", lambda: datamove_cmd(one_part), fresh("datamove-1-part"),
                lambda log: dm_check(log, "datamove-1-part"))]
          if scenario == "s3-large" else []),
    ]


def rerun_cases(src: Path, expected: dict[str, int]) -> list[Case]:
    """Rerun of a completed small local job: nothing to copy, everything to confirm.

    rclone gets its own completed copy (rclone compares modtimes, which datamove may not
    preserve); datamove reruns its own manifest. Setup runs are not measured.
    """
    scenario = "rerun-small"
    out = WORK / "out" / scenario
    rclone_dst = out / "rclone"
    manifest = datamove_manifest(scenario, src, out / "datamove", None)
    env = tool_env()
    done: set[str] = set()

    def setup(tool: str) -> Callable[[], None]:
        def prepare() -> None:
            if tool not in done:
                discard(out / tool)
                if tool == "datamove":
                    discard(WORK / f"ledger-{scenario}")
                    argv = datamove_cmd(manifest)
                else:
                    argv = ["rclone", "copy", *RCLONE_PAR, str(src), str(rclone_dst)]
                log = WORK / "logs" / f"{scenario}-{tool}-setup"
                *_, code = measure(argv, log, env)
                if code != 0 or listing(out / tool) != expected:
                    raise RuntimeError(f"setup copy for {tool} failed (exit {code}); see {log}")
                done.add(tool)
            warm(src)
            warm(out / tool)  # rclone check reads both sides
        return prepare

    def untouched(_log: Path) -> None:
        if listing(rclone_dst) != expected:
            raise RuntimeError("rclone destination changed during the rerun")

    def dm_check(log: Path) -> None:
        check_datamove_json(log, copied=0, skipped=len(expected))

    return [
        Case("rclone-check", lambda: ["rclone", "check", *RCLONE_PAR, str(src),
                                      str(rclone_dst)], setup("rclone"), untouched),
        Case("rclone-check-size-only", lambda: ["rclone", "check", "--size-only", *RCLONE_PAR,
                                                str(src), str(rclone_dst)],
             setup("rclone"), untouched),
        Case("rclone-copy-noop", lambda: ["rclone", "copy", *RCLONE_PAR, str(src),
                                          str(rclone_dst)], setup("rclone"), untouched),
        Case("datamove", lambda: datamove_cmd(manifest), setup("datamove"), dm_check),
    ]


# --- encrypted scenarios --------------------------------------------------------------

CRYPT_REMOTE = "benchcrypt"  # rclone crypt remote, configured from the environment only
CRYPT_PASSWORD = "datamove-bench"  # a throwaway passphrase for the benchmark
AGE_CHUNK = RCLONE_BLOCK = 64 * 1024  # both ciphers seal 64 KiB chunks with a 16-byte tag
ENC_SAMPLE = 50  # small-file objects decrypted per run to validate it (large: all)


@dataclass(frozen=True)
class Keys:
    """The run's age key pair (X25519), made with age-keygen."""

    identity: Path
    recipients: Path


def make_keys() -> Keys:
    """A fresh key pair for this run in .work/keys/: identity.txt and recipients.txt."""
    root = WORK / "keys"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    keys = Keys(root / "identity.txt", root / "recipients.txt")
    subprocess.run(["age-keygen", "-o", str(keys.identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(keys.identity)], check=True,
                            capture_output=True, text=True).stdout.strip()
    if not public.startswith("age1"):
        raise RuntimeError(f"age-keygen -y printed {public!r}, not an age1… recipient")
    keys.recipients.write_text(public + "\n")
    return keys


@functools.cache
def obscured_password() -> str:
    """rclone wants crypt passwords obscured (reversibly encoded); see rclone obscure."""
    return subprocess.run(["rclone", "obscure", CRYPT_PASSWORD], check=True,
                          capture_output=True, text=True).stdout.strip()


def rclone_crypt_env(dst: Path) -> dict[str, str]:
    """The crypt remote ``benchcrypt:`` wrapping the local directory dst, with no config
    file: file names are not encrypted (each object is stored as ``KEY.bin``)."""
    prefix = f"RCLONE_CONFIG_{CRYPT_REMOTE.upper()}_"
    return {prefix + "TYPE": "crypt", prefix + "REMOTE": str(dst),
            prefix + "PASSWORD": obscured_password(), prefix + "FILENAME_ENCRYPTION": "off"}


def rclone_crypt_size(size: int) -> int:
    """rclone crypt's stored size: 32-byte header (magic, nonce), 16-byte tag per block."""
    return 32 + size + 16 * -(-size // RCLONE_BLOCK)


def age_header_size(path: Path) -> int:
    """Length of an age file's header, through the newline after its '--- MAC' line."""
    with open(path, "rb") as f:
        head = f.read(4096)
    mac = head.find(b"\n--- ")
    end = head.find(b"\n", mac + 1) if mac >= 0 else -1
    if not head.startswith(b"age-encryption.org/v1\n") or end < 0:
        raise RuntimeError(f"{path} does not start with an age v1 header")
    return end + 1


def age_size(size: int, header: int) -> int:
    """age's stored size: header, 16-byte payload nonce, a 16-byte tag per 64 KiB chunk
    (at least one chunk; the last may be full)."""
    return header + 16 + size + 16 * max(1, -(-size // AGE_CHUNK))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_of_output(argv: list[str], env: dict[str, str]) -> str:
    """sha256 of what a command writes to stdout (a decryption), streamed."""
    sha = hashlib.sha256()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while block := proc.stdout.read(MIB):
            sha.update(block)
        err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-400:]}")
    return sha.hexdigest()


def enc_cases(scenario: str, src: Path, expected: dict[str, int], keys: Keys) -> list[Case]:
    """local -> local, encrypted: rclone crypt (copy; copy + cryptcheck), datamove
    (verify: checksum; verify: full, which decrypts what it wrote).

    Validation after each run (not timed): the destination holds exactly the source's
    keys with the cipher's suffix and the size its format implies, and a sample (every
    file of the large set, 50 random small ones) decrypts (``age -d -i`` for datamove,
    ``rclone cat benchcrypt:KEY`` for rclone) to the source's sha256.
    """
    out = WORK / "out" / scenario
    sample_n = len(expected) if "large" in scenario else ENC_SAMPLE

    def fresh(tool: str) -> Callable[[], None]:
        def prepare() -> None:
            discard(out / tool)
            discard(WORK / f"ledger-{scenario}")
            (out / tool).mkdir(parents=True)
            warm(src)
        return prepare

    def decrypts(tool: str, decrypt: Callable[[str], list[str]], env: dict[str, str]) -> None:
        for key in random.Random().sample(sorted(expected), sample_n):
            if sha256_of_output(decrypt(key), env) != sha256_file(src / key):
                raise RuntimeError(f"{out / tool}: {key} decrypts to other bytes than "
                                   "the source's")

    def rclone_check(tool: str) -> Callable[[Path], None]:
        def check(_log: Path) -> None:
            want = {k + ".bin": rclone_crypt_size(n) for k, n in expected.items()}
            if listing(out / tool) != want:
                raise RuntimeError(f"{out / tool} does not hold exactly the source's keys "
                                   "+ .bin with rclone crypt's sizes")
            decrypts(tool, lambda key: ["rclone", "cat", f"{CRYPT_REMOTE}:{key}"],
                     {**tool_env(), **rclone_crypt_env(out / tool)})
            discard(out / tool)  # kept in place only when it failed, for inspection
        return check

    def dm_check(tool: str) -> Callable[[Path], None]:
        def check(log: Path) -> None:
            check_datamove_json(log, copied=len(expected))
            found = listing(out / tool)
            if set(found) != {k + ".age" for k in expected}:
                raise RuntimeError(f"{out / tool} does not hold exactly the source's keys "
                                   "+ .age")
            header = age_header_size(out / tool / (next(iter(expected)) + ".age"))
            wrong = [k for k, n in expected.items() if found[k + ".age"] != age_size(n, header)]
            if wrong:
                raise RuntimeError(f"{len(wrong)} objects have other sizes than age's, "
                                   f"e.g. {wrong[0]}")
            decrypts(tool, lambda key: ["age", "-d", "-i", str(keys.identity),
                                        str(out / tool / (key + ".age"))], tool_env())
            discard(out / tool)
        return check

    copy = ["rclone", "copy", *RCLONE_PAR, str(src), f"{CRYPT_REMOTE}:"]
    # copy, then cryptcheck (which re-encrypts each source file with the nonce of its
    # stored object and compares md5s); one timed process tree.
    with_check = ["sh", "-c", 'rclone copy "$@" && rclone cryptcheck "$@"', "rclone-crypt",
                  *RCLONE_PAR, str(src), f"{CRYPT_REMOTE}:"]
    checksum = datamove_manifest(scenario, src, out / "datamove", None, keys)
    full = datamove_manifest(scenario, src, out / "datamove-verify-full", None, keys,
                             verify="full", tag="-verify-full")
    procs = datamove_manifest(scenario, src, out / "datamove-processes", None, keys,
                              tag="-processes", processes=os.cpu_count() or 2)
    return [
        Case("rclone-crypt", lambda: copy, fresh("rclone-crypt"),
             rclone_check("rclone-crypt"), rclone_crypt_env(out / "rclone-crypt")),
        Case("rclone-crypt+cryptcheck", lambda: with_check, fresh("rclone-crypt+cryptcheck"),
             rclone_check("rclone-crypt+cryptcheck"),
             rclone_crypt_env(out / "rclone-crypt+cryptcheck")),
        Case("datamove", lambda: datamove_cmd(checksum), fresh("datamove"),
             dm_check("datamove")),
        Case("datamove-verify-full", lambda: datamove_cmd(full),
             fresh("datamove-verify-full"), dm_check("datamove-verify-full")),
        Case("datamove-processes", lambda: datamove_cmd(procs),
             fresh("datamove-processes"), dm_check("datamove-processes")),
    ]


def crypto_throughput(mib: int) -> dict[str, float]:
    """datamove's age cipher, one thread (benchmarks/crypto_throughput.py --json)."""
    done = subprocess.run([sys.executable, str(HERE / "crypto_throughput.py"), "--mib",
                           str(mib), "--cli", "--json"], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=tool_env())
    if done.returncode != 0:
        raise RuntimeError(f"crypto_throughput.py exited {done.returncode}: "
                           f"{done.stderr.strip()[-400:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def crypto_notes(figures: dict[str, float]) -> list[str]:
    """Markdown lines for the per-core cipher throughput."""
    line = (f"- datamove's age (ChaCha20-Poly1305 via `cryptography`, 64 KiB chunks), one "
            f"thread, {figures['mib']:.0f} MiB stream, MB/s per core (CPU time): encrypt "
            f"{figures['encrypt_update_chunks_mb_s_cpu']:.0f}, decrypt "
            f"{figures['decrypt_update_chunks_mb_s_cpu']:.0f}")
    if "age_cli_encrypt_mb_s_wall" in figures:
        line += (f"; Go `age` CLI file to file (wall, with its I/O): encrypt "
                 f"{figures['age_cli_encrypt_mb_s_wall']:.0f}, decrypt "
                 f"{figures['age_cli_decrypt_mb_s_wall']:.0f}")
    return ["Encryption throughput per core:", "", line]


def versions() -> dict[str, str]:
    """First line of each tool's version output, recorded with the results."""
    commands = {
        "datamove": [str(VENV_BIN / "datamove"), "--version"],
        "rclone": ["rclone", "version"],
        "s5cmd": [str(PEERS_BIN / "s5cmd"), "version"],
        "aws": [str(PEERS_BIN / "aws"), "--version"],
        "moto": [str(VENV_BIN / "python"), "-c", "import moto; print(moto.__version__)"],
        "age": ["age", "--version"],
    }
    found: dict[str, str] = {}
    for name, argv in commands.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                  env=tool_env())
            lines = (done.stdout or done.stderr).strip().splitlines()
            found[name] = lines[0].split(", version ")[-1] if lines else "?"
        except OSError:
            found[name] = "missing"
    return found


# --- main -----------------------------------------------------------------------------

SCENARIOS = ["local-large", "local-small", "local-tiny", "s3-large", "s3-small", "rerun-small",
             "local-large-enc", "local-small-enc"]
TOOLS = {  # per scenario family, in run order; --only filters on "scenario/tool"
    "local": ["cp+sha256sum", "rclone", "datamove", "datamove-processes"],
    "s3": ["s5cmd", "aws-s3-cp", "rclone", "datamove", "datamove-1-part"],
    "rerun": ["rclone-check", "rclone-check-size-only", "rclone-copy-noop", "datamove"],
    "enc": ["rclone-crypt", "rclone-crypt+cryptcheck", "datamove", "datamove-verify-full",
            "datamove-processes"],
}


def family(scenario: str) -> str:
    """local, s3, rerun or enc: which tools a scenario runs."""
    return "enc" if scenario.endswith("-enc") else scenario.split("-")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 × 32 MiB, 2,000 × 4 KiB and 20,000 × 100 B instead of 4 × 256 MiB, "
                             "20,000 × 4 KiB and 200,000 × 100 B")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only cases whose 'scenario/tool' contains NAME "
                             f"(repeatable); scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; median kept")
    parser.add_argument("--interleave", action="store_true",
                        help="with --repeat: the tools of a scenario take turns instead of "
                             "running their repeats back to back")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    (WORK / "rclone.conf").touch()

    def wanted(scenario: str, tool: str) -> bool:
        return not args.only or any(n in f"{scenario}/{tool}" for n in args.only)

    if not (PEERS_BIN / "s5cmd").exists() or shutil.which("rclone") is None:
        print("peers missing: run benchmarks/setup.sh first", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before starting; other work on this "
              f"{os.cpu_count()}-core machine will distort the numbers", file=sys.stderr)
    compile_bytecode()
    settle_filesystem()
    moto: Moto | None = None
    keys: Keys | None = None
    results: list[Result] = []
    notes: list[str] = []
    extra: dict[str, object] = {}
    if any(wanted(s, t) for s in SCENARIOS if family(s) == "enc" for t in TOOLS["enc"]):
        if shutil.which("age") is None or shutil.which("age-keygen") is None:
            print("age and age-keygen missing: run benchmarks/setup.sh first", file=sys.stderr)
            return 2
        keys = make_keys()
        print("timing datamove's age cipher on one core...", flush=True)
        try:
            extra["crypto_throughput"] = figures = crypto_throughput(
                256 if profile is FULL else 64)
            notes = crypto_notes(figures)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            notes = [f"Encryption throughput per core: FAILED ({exc})"]
        print("\n".join(notes[2:] or notes), flush=True)
    try:
        for scenario in SCENARIOS:
            kind = scenario.split("-")[1]
            if not any(wanted(scenario, tool) for tool in TOOLS[family(scenario)]):
                continue
            src = build_data(profile, kind)
            expected = _expected(profile, kind)
            if scenario.startswith("s3"):
                moto = moto or Moto()
                cases = s3_cases(scenario, src, expected, moto)
            elif family(scenario) == "enc":
                assert keys is not None
                cases = enc_cases(scenario, src, expected, keys)
            elif scenario.startswith("local"):
                cases = local_cases(scenario, src, expected)
            else:
                cases = rerun_cases(src, expected)
            nbytes = 0 if scenario.startswith("rerun") else sum(expected.values())
            print(f"{scenario}: {len(expected)} files, {sum(expected.values()) / MIB:.0f} MiB",
                  flush=True)
            server = moto if scenario.startswith("s3") else None
            results += run_cases(scenario, [c for c in cases if wanted(scenario, c.tool)],
                                 len(expected), nbytes, args.repeat, server, args.interleave)
    finally:
        if moto:
            moto.stop()
    print()
    found = versions()
    found["load average (1 min) before/after"] = f"{load:.2f}/{os.getloadavg()[0]:.2f}"
    report(results, profile, WORK, found, notes, extra)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
