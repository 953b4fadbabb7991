"""One spelling for every option across all commands (issue 18).

Walks the real click command tree: an option's name always comes with the same
short form and negative form, options with the same meaning (the Python parameter
they fill) are spelled alike everywhere, and the commands that show live progress
all accept ``--progress/--no-progress``. Hidden options are deprecated spellings kept
for old scripts; they are held to nothing but being hidden.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import click
import pytest

from datamove.cli import main
from tests.conftest import cli


def _commands(group: click.Group = main, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = dict(_commands())


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden
            and p.name not in ("help",)]


def _spelling(option: click.Option) -> tuple[str, ...]:
    return (*sorted(option.opts), *sorted(option.secondary_opts))


def _long(option: click.Option) -> list[str]:
    return [o for o in option.opts if o.startswith("--")]


# What a parameter means (the Python name it fills) -> its one spelling (as _spelling
# gives it: the names sorted, then the negative form).
CANONICAL = {
    "as_json": ("--json",),
    "progress": ("--progress", "--no-progress"),
    "datasets": ("--dataset",),
    "dataset": ("--dataset",),
    "scheduler": ("--scheduler",),
    "identity_file": ("--identity", "-i"),
    "identity_files": ("--identity", "-i"),
    "policies": ("--policies",),
    "output": ("--output", "-o"),
    "checkpoint_file": ("--checkpoint",),
    "dry_run": ("--dry-run",),
    "passphrase": ("--passphrase", "-p"),
    "recipients_file": ("--recipients-file", "-R"),
    "recipients_files": ("--recipients-file", "-R"),
    "encrypt_to": ("--recipients-file", "-R"),  # copy, sync, check
    "kms_context": ("--kms-context",),
    "kms_region": ("--kms-region",),
    "kms_endpoint_url": ("--kms-endpoint-url",),
    "timeout": ("--timeout",),
    "poll": ("--poll",),
    "restore_tier": ("--restore-tier",),
    "restore_days": ("--restore-days",),
    "reverify": ("--reverify",),
}

# Every command that runs work with a live display (the engine, or long listings).
PROGRESS_COMMANDS = {"plan", "run", "verify", "archive", "restore", "drill", "keys rotate"}


def test_the_tree_is_walked_whole() -> None:
    assert {"plan", "run", "drill", "audit show", "audit export", "keys rotate",
            "policy check"} <= set(COMMANDS)


def test_an_option_name_always_has_the_same_short_and_negative_forms() -> None:
    seen: dict[str, dict[tuple[str, ...], list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in COMMANDS.items():
        for option in _options(command):
            for name in (*option.opts, *option.secondary_opts):
                seen[name][_spelling(option)].append(path)
    mixed = {name: dict(spellings) for name, spellings in seen.items() if len(spellings) > 1}
    assert not mixed, f"one option, several spellings: {mixed}"


def test_options_with_one_meaning_share_one_spelling() -> None:
    wrong = []
    for path, command in COMMANDS.items():
        for option in _options(command):
            expected = CANONICAL.get(option.name or "")
            if expected is not None and _spelling(option) != expected:
                wrong.append((path, option.name, _spelling(option), expected))
    assert not wrong, wrong


# Formats of something other than the command's answer on stdout: log lines (stderr or
# --log-file, `--log-format json` as issue 18 names it).
OTHER_FORMATS = {"log_format"}


def test_json_output_is_always_the_json_flag() -> None:
    """No visible --format json, --output-format json or -o json: `--json` it is."""
    for path, command in COMMANDS.items():
        for option in _options(command):
            if isinstance(option.type, click.Choice) and option.name not in OTHER_FORMATS:
                assert "json" not in option.type.choices, (path, option.opts)
            if "--json" in option.opts:
                assert option.is_flag and option.name == "as_json", path


def test_every_command_with_live_progress_accepts_no_progress() -> None:
    having = {path for path, command in COMMANDS.items()
              if any(o.name == "progress" for o in _options(command))}
    assert having >= PROGRESS_COMMANDS, PROGRESS_COMMANDS - having
    for path, command in COMMANDS.items():  # an engine means work worth watching
        if any(o.name == "scheduler" for o in _options(command)):
            assert path in having, path


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_help(path: str) -> None:
    done = cli(*path.split(), "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: " in done.stdout
    for option in _options(COMMANDS[path]):
        assert option.help, (path, option.opts)
