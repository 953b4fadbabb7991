"""The ``datamove`` command: parse arguments, call one API function, render.

Exit codes (README.md, "Commands"): 0 ok, 1 objects failed or differ, 2 bad input,
3 refused by policy, 130 / 143 interrupted by SIGINT / SIGTERM (interrupt.py). With
``--json`` the last line of stdout is one JSON object that always carries
``exit_code``, errors included.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from datamove import __version__, api
from datamove.cli.options import JSON, MANIFEST, Group, emit
from datamove.cli.options import call as _call
from datamove.cli.options import fail as _fail
from datamove.commands import status as queries
from datamove.errors import EXIT_BAD_INPUT
from datamove.pipeline import interrupt
from datamove.pipeline.progress import progress_for
from datamove.pipeline.report import Report

SCHEDULER = click.option("--scheduler", metavar="tcp://HOST:PORT",
                         help="Run on an existing Dask scheduler instead of the embedded one.")
DATASET = click.option("--dataset", "datasets", multiple=True, metavar="NAME",
                       help="Only this dataset (repeatable).")
PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Live progress on stderr when it is a terminal.")
POLICIES = click.option("--policies", multiple=True, metavar="PATH",
                        help="Policy file, directory or glob (repeatable), instead of "
                             "$DATAMOVE_POLICIES, the manifest's policies: or policies/*.yaml "
                             "beside the manifest.")
IDENTITY = click.option("--identity", "identity_file", metavar="FILE",
                        help="Identity file (any form) for encrypted datasets, instead of "
                             "the manifest's encrypt.identity.file.")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="datamove")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Move datasets between stores, verified end to end."""
    configure_logging(verbose)


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv), with no credential in any line.

    At DEBUG botocore logs request headers (session tokens, signatures) and
    bodies. Every record is scrubbed as it is created (redact.install_log_scrubber),
    whichever thread or library of this process makes it, and every handler already
    configured, including those of libraries that do not propagate to the root
    (distributed, tornado), also filters what it emits.
    """
    from datamove.redact import install_log_scrubber

    install_log_scrubber()
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    loggers = [logging.getLogger(), *(logger for logger in
                                      list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _Scrub) for f in handler.filters):
                handler.addFilter(_Scrub())


class _Scrub(logging.Filter):
    """Replace anything that looks like a credential in a log line by <redacted>
    (for records the scrubbing factory did not make, or that changed since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from datamove.redact import scrub_record

        scrub_record(record)
        return True


@main.command()
@MANIFEST
@JSON
@DATASET
@click.option("--reverify", is_flag=True, help="Count up-to-date objects as to re-verify.")
def plan(manifest: str, as_json: bool, datasets: tuple[str, ...], reverify: bool) -> None:
    """Show what a run would copy and skip, per dataset, without copying."""
    _finish(lambda: api.plan(api.load_manifest(manifest), reverify=reverify,
                             datasets=list(datasets) or None), as_json)


@main.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
@IDENTITY
@POLICIES
@click.option("--dry-run", is_flag=True, help="Only plan (same as `datamove plan`).")
@click.option("--reverify", is_flag=True,
              help="Re-check up-to-date objects against their source and repair any that differ.")
def run(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
        progress: bool, identity_file: str | None, policies: tuple[str, ...], dry_run: bool,
        reverify: bool) -> None:
    """Copy every dataset in MANIFEST; verify each object; never copy twice.

    Policies are checked first (`datamove policy check`): a denial ends the run
    with exit 3 before anything moves. Encrypted datasets need only their
    recipients; an identity is used to verify by decryption (verify: full,
    --reverify).
    """
    def go() -> Report:
        loaded = api.load_manifest(manifest)
        if dry_run:
            return api.plan(loaded, reverify=reverify, datasets=list(datasets) or None)
        return api.run(loaded, scheduler=scheduler, reverify=reverify,
                       datasets=list(datasets) or None,
                       progress=progress_for(progress and not as_json),
                       identity=identity_file, policies=list(policies) or None)

    _finish(go, as_json)


@main.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
@IDENTITY
def verify(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
           progress: bool, identity_file: str | None) -> None:
    """Compare sources and destinations without copying (missing, extra, differing).

    Encrypted objects are stream-decrypted and compared with the source when an
    identity is configured or given (nothing is written), otherwise their stored
    bytes are compared with the ledger. Exit 0 all match, 1 some differ, 2 bad
    input (including an identity that opens no object).
    """
    _finish(lambda: api.verify(api.load_manifest(manifest), scheduler=scheduler,
                               datasets=list(datasets) or None,
                               progress=progress_for(progress and not as_json),
                               identity=identity_file), as_json)


def _finish(action: Callable[[], Report], as_json: bool) -> None:
    """Run an API call; print its report; exit with its code."""
    emit(_call(action, as_json), as_json)


@main.command()
@MANIFEST
@JSON
@DATASET
def status(manifest: str, as_json: bool, datasets: tuple[str, ...]) -> None:
    """Done / pending / failed objects per dataset, from the ledger and a fresh plan.

    \b
    done      recorded in the ledger and unchanged: a run skips it
    pending   a run would copy it, or verify and record it
    failed    a run would copy it, and its latest ledger row says failed
    deleted at source: recorded, but no longer at the source
    (done + pending + failed = the objects at the source)

    Lists sources and destinations like `datamove plan`. With no ledger yet every
    object is pending. Exit 0 whatever the counts; 2 for bad input or an
    unreachable location.
    """
    _answer(lambda: queries.status(api.load_manifest(manifest),
                                   datasets=list(datasets) or None), as_json)


@main.command()
@MANIFEST
@JSON
@click.option("--limit", type=click.IntRange(min=0), default=queries.DEFAULT_HISTORY_LIMIT,
              show_default=True, metavar="N", help="Newest N runs (0: all).")
@click.option("--all-manifests", is_flag=True,
              help="Every run in the ledger, not only this manifest's (by name).")
def history(manifest: str, as_json: bool, limit: int, all_manifests: bool) -> None:
    """The runs recorded in the ledger, newest first.

    A run with no end row (killed, or still running) shows as "interrupted", with
    the counts of the objects it recorded. Exit 0, also when nothing is recorded
    yet; 2 for bad input.
    """
    _answer(lambda: queries.history(api.load_manifest(manifest), limit=limit,
                                    all_manifests=all_manifests), as_json)


@main.command()
@MANIFEST
@click.argument("key")
@JSON
@DATASET
def show(manifest: str, key: str, as_json: bool, datasets: tuple[str, ...]) -> None:
    """Every ledger row of object KEY across runs, oldest first: its provenance.

    KEY is relative to its dataset (as `plan` and the ledger show it); a full
    source or destination URL also works. All datasets of MANIFEST are searched
    unless --dataset is given. Exit 0 when rows are found; 1 when KEY is not
    recorded (not copied yet, or a typo: similar keys are suggested); 2 for bad
    input such as an unknown dataset.
    """
    _answer(lambda: queries.show(api.load_manifest(manifest), key,
                                 datasets=list(datasets) or None), as_json)


def _answer(action: Callable[[], Any], as_json: bool) -> None:
    """Run a ledger query; print it (JSON: one object, last line); exit with its code."""
    result = _call(action, as_json)
    if result.error:
        click.echo(f"datamove: {result.error}", err=True)
    emit(result, as_json)


# --- keys, encrypt, decrypt ------------------------------------------------------------

def _context_pairs(ctx: click.Context, param: click.Parameter,
                   values: tuple[str, ...]) -> dict[str, str]:
    """``--kms-context k=v`` (repeatable) as a dict; a malformed or repeated key is a usage
    error naming the option, so a typo cannot silently change the context."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}")
        if key in pairs:
            raise click.BadParameter(f"key {key!r} given twice")
        pairs[key] = val
    return pairs


def _kms_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say how to unwrap (or wrap) a KMS-protected identity file."""
    for option in reversed([
        click.option("--kms-context", "kms_context", multiple=True, metavar="KEY=VALUE",
                     callback=_context_pairs,
                     help="KMS encryption context pair (repeatable); unwrapping needs "
                          "exactly the pairs used when wrapping."),
        click.option("--kms-region", metavar="REGION",
                     help="AWS region of the KMS key [default: the key ARN's, else "
                          "AWS_DEFAULT_REGION]."),
        click.option("--kms-endpoint-url", metavar="URL",
                     help="KMS endpoint [default: AWS_ENDPOINT_URL, else AWS's]."),
    ]):
        command = option(command)
    return command


PASSPHRASE_HELP = "the passphrase in the environment variable DATAMOVE_PASSPHRASE"


@main.group()
def policy() -> None:
    """Policies as code: rules a manifest must satisfy before anything moves.

    Rule files (docs/POLICIES.md) select datasets by classification, tags or
    name and require encryption, recipients, destination regions, storage
    classes, tags or a verify mode. Regions are discovered from the stores; a
    declared region the store contradicts is always refused.
    """


@policy.command("check")
@MANIFEST
@POLICIES
@JSON
@DATASET
def policy_check(manifest: str, policies: tuple[str, ...], as_json: bool,
                 datasets: tuple[str, ...]) -> None:
    """Evaluate the policies for MANIFEST: every decision with its rule, dataset,
    field and reason. Exit 0 allowed (warnings included), 3 refused, 2 bad input
    (manifest or policy file)."""
    from datamove.policy.rules import check

    emit(_call(lambda: check(api.load_manifest(manifest), list(policies) or None,
                             datasets=list(datasets) or None), as_json), as_json)


@main.group()
def keys() -> None:
    """age keys: make identities, show their recipients, rotate encrypted datasets.

    An identity file holds secret keys (AGE-SECRET-KEY-1…) in one of three forms:
    plaintext (age-keygen's format), passphrase-protected (an age file encrypted
    with DATAMOVE_PASSPHRASE, like `age -p`) or wrapped by AWS KMS. Every command
    that takes an identity file accepts all three; docs/FORMAT.md describes them.
    """


@keys.command("generate")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Write the identity file here (mode 0600, never overwritten) and print "
                   "the recipient on stdout.")
@click.option("--keep", is_flag=True,
              help="With -o: if the file already exists, keep it and print its recipient "
                   "(for scripts that need a key to exist).")
@click.option("-p", "--passphrase", is_flag=True,
              help=f"Protect the identity file with {PASSPHRASE_HELP} (age scrypt).")
@click.option("--kms-key", metavar="KEY_ID",
              help="Wrap the identity file with this AWS KMS key (id, ARN or alias); "
                   "reading it needs kms:Decrypt and the same --kms-context.")
@_kms_options
def keys_generate(output: str | None, keep: bool, passphrase: bool, kms_key: str | None,
                  kms_context: dict[str, str], kms_region: str | None,
                  kms_endpoint_url: str | None) -> None:
    """Make a new X25519 identity (like age-keygen).

    Without -o the identity file goes to stdout and "Public key: age1…" to stderr;
    with -o the file is written with mode 0600 and the recipient (age1…, the
    public key to encrypt to) is printed on stdout. Exit 2 if the output file
    exists or the passphrase / KMS key cannot be used.
    """
    from datamove.crypto.identities import (
        IdentityRef,
        generate_identity_file,
        load_identities,
        write_secret_file,
    )

    if keep and output is None:
        _fail("--keep needs -o FILE", EXIT_BAD_INPUT, False)
    if keep and output is not None and os.path.exists(output):
        ref = IdentityRef.of(output, kms_context=kms_context, kms_region=kms_region,
                             kms_endpoint_url=kms_endpoint_url)
        for identity in _call(lambda: load_identities(ref), False):
            click.echo(str(identity.recipient))
        return
    recipient, text = _call(lambda: generate_identity_file(
        passphrase=passphrase, kms_key=kms_key, kms_context=kms_context,
        kms_region=kms_region, kms_endpoint_url=kms_endpoint_url), False)
    if output is None:
        click.echo(text, nl=False)
        click.echo(f"Public key: {recipient}", err=True)
        return
    _call(lambda: write_secret_file(output, text), False)
    click.echo(recipient)


@keys.command("recipient")
@click.option("-i", "--identity", "identity_files", multiple=True, required=True,
              metavar="FILE", help="Identity file, any form (repeatable).")
@_kms_options
def keys_recipient(identity_files: tuple[str, ...], kms_context: dict[str, str],
                   kms_region: str | None, kms_endpoint_url: str | None) -> None:
    """Print the recipient (age1…) of every identity in the identity files.

    Opens the file the way decrypt does: DATAMOVE_PASSPHRASE for a passphrase-
    protected file, KMS for a wrapped one. Exit 2 if a file cannot be opened.
    """
    from datamove.crypto.identities import IdentityRef, load_identities

    for path in identity_files:
        ref = IdentityRef.of(path, kms_context=kms_context, kms_region=kms_region,
                             kms_endpoint_url=kms_endpoint_url)
        for identity in _call(lambda ref=ref: load_identities(ref), False):
            click.echo(str(identity.recipient))


@keys.command("rotate")
@MANIFEST
@click.option("--recipients", "recipients_file", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=str),
              help="The new recipients (age1… lines): every object is re-wrapped for them.")
@click.option("--identity", "identity_file", metavar="FILE",
              help="Identity file (any form) that opens the current headers.")
@DATASET
@SCHEDULER
@JSON
@PROGRESS
def keys_rotate(manifest: str, recipients_file: str, identity_file: str | None,
                datasets: tuple[str, ...], scheduler: str | None, as_json: bool,
                progress: bool) -> None:
    """Re-wrap the headers of MANIFEST's encrypted objects for new recipients.

    Only each object's age header changes (same file key, same payload bytes), so
    rotation costs a header per object, not a copy. Exit codes as for `run`.
    """
    def go() -> Report:
        from datamove.commands.rotate import rotate as rotate_keys  # lands with the rotation work

        return rotate_keys(api.load_manifest(manifest), recipients_file,
                           identity_file=identity_file, datasets=list(datasets) or None,
                           scheduler=scheduler, progress=progress_for(progress and not as_json))

    _finish(go, as_json)


IN_OUT_HELP = """IN and OUT are local paths, URLs (s3://bucket/key, any fsspec URL)
    or - for stdin/stdout. A file OUT appears only when complete (temporary
    name, then rename; S3: upload completed only on success)."""


def _with_in_out_help(command: Callable[..., Any]) -> Callable[..., Any]:
    """Put the shared IN/OUT paragraph into a command's help (click reads __doc__)."""
    command.__doc__ = (command.__doc__ or "").replace("{in_out}", IN_OUT_HELP)
    return command


@main.command()
@click.option("-r", "--recipient", "recipients", multiple=True, metavar="age1…",
              help="Encrypt to this recipient (repeatable).")
@click.option("-R", "--recipients-file", "recipients_files", multiple=True, metavar="FILE",
              help="Encrypt to every recipient in FILE, one age1… a line (repeatable).")
@click.option("-p", "--passphrase", is_flag=True,
              help=f"Encrypt to {PASSPHRASE_HELP} instead (no -r/-R with it).")
@click.option("-a", "--armor", is_flag=True, help="ASCII-armored (PEM-like) output.")
@click.argument("src", metavar="IN")
@click.argument("dst", metavar="OUT")
@_with_in_out_help
def encrypt(recipients: tuple[str, ...], recipients_files: tuple[str, ...], passphrase: bool,
            armor: bool, src: str, dst: str) -> None:
    """Encrypt IN to OUT in the age v1 format (age -d, rage and datamove decrypt it).

    {in_out}

    Exit 0 on success, 1 if reading or writing failed (nothing published), 2 for
    bad recipients or arguments.
    """
    from datamove.commands.encrypt import encrypt_file

    _call(lambda: encrypt_file(src, dst, list(recipients), list(recipients_files), passphrase,
                               armor=armor), False)


@main.command()
@click.option("-i", "--identity", "identity_files", multiple=True, metavar="FILE",
              help="Identity file, any form (plaintext, passphrase-protected, KMS-wrapped); "
                   "repeatable.")
@click.option("-p", "--passphrase", is_flag=True,
              help=f"Also try {PASSPHRASE_HELP} (for files encrypted with -p).")
@_kms_options
@click.argument("src", metavar="IN")
@click.argument("dst", metavar="OUT")
@_with_in_out_help
def decrypt(identity_files: tuple[str, ...], passphrase: bool, kms_context: dict[str, str],
            kms_region: str | None, kms_endpoint_url: str | None, src: str, dst: str) -> None:
    """Decrypt the age file IN to OUT, authenticating every chunk.

    {in_out}

    OUT is published only after the last chunk authenticated; a damaged,
    truncated or edited IN leaves nothing behind (exit 1). With OUT = - the
    authenticated chunks are written as they come and cannot be taken back: on
    a non-zero exit discard what was read. Exit 2 when no identity matches or
    an identity file cannot be opened.
    """
    from datamove.commands.encrypt import decrypt_file

    _call(lambda: decrypt_file(src, dst, list(identity_files), passphrase,
                               kms_context=kms_context, kms_region=kms_region,
                               kms_endpoint_url=kms_endpoint_url), False)


# --- audit: the auditors' commands (audit_cli.py) plus residency and lineage ----------

from datamove.cli.audit import audit  # noqa: E402 (registered here, after the shared options)

main.add_command(audit)

from datamove.cli.lifecycle import register  # noqa: E402 (archive, schedule, restore, drill)

register(main)


@audit.command("residency")
@MANIFEST
@POLICIES
@JSON
@DATASET
def audit_residency(manifest: str, policies: tuple[str, ...], as_json: bool,
                    datasets: tuple[str, ...]) -> None:
    """Where every recorded copy lives, judged against the policies' regions rules.

    Per dataset and object: the region of the copy (what its store says now, else
    what was declared when it was copied) and the rules it breaks. Exit 0 all
    copies where allowed, 1 some outside (or unknown), 2 bad input.
    """
    from datamove.commands.residency import residency

    emit(_call(lambda: residency(api.load_manifest(manifest), list(policies) or None,
                                 datasets=list(datasets) or None), as_json), as_json)


@audit.command("export")
@MANIFEST
@click.option("--format", "fmt", type=click.Choice(["openlineage"]), required=True,
              help="openlineage: OpenLineage RunEvents as JSON Lines (docs/FORMAT.md, "
                   "\"Lineage\").")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Write here instead of stdout.")
@click.option("--run", "run_ids", multiple=True, metavar="RUN_ID",
              help="Only this run (repeatable; `datamove history` lists them).")
def audit_export(manifest: str, fmt: str, output: str | None, run_ids: tuple[str, ...]) -> None:
    """Export the ledger's runs as lineage events: one START and one COMPLETE or FAIL
    per run, with checksums, key fingerprints and residency as custom facets."""
    from datamove.commands.lineage import write_openlineage

    def go() -> int:
        loaded = api.load_manifest(manifest)
        if output is None:
            return write_openlineage(loaded, sys.stdout, run_ids=list(run_ids) or None)
        with open(output, "w", encoding="utf-8") as out:
            return write_openlineage(loaded, out, run_ids=list(run_ids) or None)

    count = _call(go, False)
    click.echo(f"datamove: {count} {fmt} events", err=True)


def entry() -> None:
    """The ``datamove`` program: the CLI with SIGINT and SIGTERM handled (interrupt.py).
    Only here, not in ``main``: a test calling ``main`` in-process keeps its own handlers."""
    interrupt.install()
    main()

