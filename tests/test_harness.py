"""The test harness itself: an in-process CLI call answers as the process would and
leaves this process as it found it; servers' ports are never guessed."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import pytest

import datamove.stores.core  # noqa: F401  (what its import sets, cli() keeps)
from datamove import redact
from datamove.pipeline import interrupt
from tests.conftest import (
    AWS_ENV,
    cli,
    environment,
    refused_port,
    run_cli,
    running_moto,
    write_manifest,
)


def handler_filters() -> dict[logging.Handler, list]:
    loggers = [logging.getLogger(), *(logger for logger in
                                      logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    return {h: list(h.filters) for lg in loggers for h in lg.handlers}


def process_state() -> dict:
    """What a CLI call may change in the process that runs it."""
    return {
        "environ": dict(os.environ), "cwd": os.getcwd(),
        "root": (list(logging.getLogger().handlers), logging.getLogger().level),
        "factory": logging.getLogRecordFactory(),
        "secrets": list(redact._known_values),
        "signals": [signal.getsignal(s) for s in interrupt.SIGNALS],
        "interrupt": (interrupt._requested, interrupt._deferring),
    }


def test_an_in_process_call_answers_like_the_console_entry_and_restores_the_process(
        tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    before, filters = process_state(), handler_filters()
    secret = "s3cr3t-value-for-the-harness"
    inside = cli("-vv", "run", "m.yaml", cwd=tmp_path, env={"AWS_SESSION_TOKEN": secret})
    assert inside.returncode == 0, inside.stderr
    assert (tmp_path / "dst" / "a.txt").read_text() == "a"  # cwd applied
    assert "DEBUG " in inside.stderr  # -vv logs to the call's stderr, as in a process
    assert process_state() == before
    assert os.environ.get("AWS_SESSION_TOKEN") != secret
    after = handler_filters()
    # Handlers that outlived the call have their filters back (distributed may replace
    # its own handlers when a cluster starts, so one that is gone is not compared).
    assert {h: after[h] for h in filters if h in after} == \
        {h: f for h, f in filters.items() if h in after}
    assert filters.keys() & after.keys()  # the comparison above compared something
    # Handlers libraries made during the call (first imports) keep no filter of the CLI's.
    assert not [f for h in after.keys() - filters.keys() for f in after[h]
                if type(f).__name__ == "_Scrub"]

    # The same errors, messages and exit codes as the real entry in a subprocess.
    for args in (["run", str(tmp_path / "absent.yaml"), "--json"],
                 ["run", str(manifest), "--dataset", "nope"], ["no-such-command"]):
        here, there = cli(*args), run_cli(*args)
        assert (here.returncode, here.stdout, here.stderr) == \
            (there.returncode, there.stdout, there.stderr.replace(
                "python -m datamove.cli", "datamove"))
        assert here.returncode == 2 and "Traceback" not in here.stderr
    assert process_state() == before


def test_environment_puts_back_what_was_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMOVE_HARNESS_KEPT", "before")
    monkeypatch.delenv("DATAMOVE_HARNESS_NEW", raising=False)
    with environment(DATAMOVE_HARNESS_KEPT="during", DATAMOVE_HARNESS_NEW="during"):
        assert os.environ["DATAMOVE_HARNESS_KEPT"] == os.environ["DATAMOVE_HARNESS_NEW"] == \
            "during"
    assert os.environ["DATAMOVE_HARNESS_KEPT"] == "before"
    assert "DATAMOVE_HARNESS_NEW" not in os.environ


def test_a_refused_port_refuses_and_no_server_can_take_it() -> None:
    with refused_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))


def test_a_moto_server_adds_only_the_missing_credentials_and_takes_them_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with running_moto() as server:
        assert server.port != 0
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"
        assert os.environ["AWS_DEFAULT_REGION"] == AWS_ENV["AWS_DEFAULT_REGION"]
    assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"
    assert "AWS_DEFAULT_REGION" not in os.environ
