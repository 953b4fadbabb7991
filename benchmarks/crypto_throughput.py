"""age encryption / decryption throughput per core (MB/s) on a stream.

Pushes ``--mib`` MiB (default 256) of pseudo-random plaintext through
``AgeEncryptor`` in 1 MiB pieces, then the ciphertext through ``AgeDecryptor``,
all in one thread, and prints MB/s (10^6 bytes per second) by wall time and by
CPU time of this process. Output is dropped as a streaming pipeline drops it once
written. Two API shapes are timed: ``update_chunks`` (per-chunk pieces, what
``encrypt``/``decrypt`` use) and ``update`` (one joined buffer per call), because
the join's large allocations interact badly with glibc's heap trimming. With
``--cli``, the Debian ``age`` binary is timed on the same data for comparison (file
to file, so that figure includes its I/O). No assertion: the numbers go in the
resolution note. With ``--json``, one JSON object with the same figures is printed
instead (``run.py`` runs it that way beside the encrypted scenarios).

Usage:
    /work/main/.venv/bin/python benchmarks/crypto_throughput.py [--mib 256] [--cli] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datamove.age.files import AgeDecryptor, AgeEncryptor
from datamove.age.keys import X25519Identity, format_identity_file

PIECE = 1 << 20


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--cli", action="store_true", help="also time the age CLI")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures: dict[str, float | int] = {"mib": args.mib}
    size = args.mib * PIECE
    pieces = [os.urandom(PIECE) for _ in range(16)]  # reused: do not time the RNG
    identity = X25519Identity.generate()

    encryptor = AgeEncryptor([identity.recipient])
    parts = [encryptor.update(pieces[i % 16]) for i in range(args.mib)]
    ciphertext = memoryview(b"".join([*parts, encryptor.finalize()]))
    del parts
    blocks = [ciphertext[i : i + PIECE] for i in range(0, len(ciphertext), PIECE)]

    def enc(joined: bool) -> None:
        encryptor = AgeEncryptor([identity.recipient])
        step = encryptor.update if joined else encryptor.update_chunks
        for i in range(args.mib):
            step(pieces[i % 16])
        encryptor.finalize()

    def dec(joined: bool) -> None:
        decryptor = AgeDecryptor([identity])
        if joined:
            total = sum(len(decryptor.update(block)) for block in blocks)
        else:
            total = sum(len(out) for block in blocks for out in decryptor.update_chunks(block))
        assert total + len(decryptor.finalize()) == size

    mb = size / 1e6
    say = (lambda _text: None) if args.json else print
    say(f"stream of {args.mib} MiB, 64 KiB chunks, fed in 1 MiB pieces, one thread")
    for joined in (False, True):
        name = "update" if joined else "update_chunks"
        for what, fn in (("encrypt", enc), ("decrypt", dec)):
            wall, cpu = timed(lambda fn=fn, joined=joined: fn(joined))
            figures[f"{what}_{name}_mb_s_wall"] = mb / wall
            figures[f"{what}_{name}_mb_s_cpu"] = mb / cpu
            say(f"{what} ({name:>13}): {mb / wall:6.0f} MB/s wall  {mb / cpu:6.0f} MB/s CPU")

    if args.cli and shutil.which("age"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            with (root / "plain").open("wb") as f:
                for i in range(args.mib):
                    f.write(pieces[i % 16])
            (root / "key").write_text(format_identity_file(identity))
            run = ["age", "-r", str(identity.recipient), "-o", str(root / "c"), str(root / "plain")]
            wall, _ = timed(lambda: subprocess.run(run, check=True))
            figures["age_cli_encrypt_mb_s_wall"] = mb / wall
            say(f"age CLI encrypt (file to file): {mb / wall:6.0f} MB/s wall")
            run = ["age", "-d", "-i", str(root / "key"), "-o", str(root / "p"), str(root / "c")]
            wall, _ = timed(lambda: subprocess.run(run, check=True))
            figures["age_cli_decrypt_mb_s_wall"] = mb / wall
            say(f"age CLI decrypt (file to file): {mb / wall:6.0f} MB/s wall")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
