"""``datamove audit``: keys, verification, queries and proofs for the audit log.

Also ``audit residency`` (where the copies live, against the policies) and ``audit
export`` (the runs as OpenLineage events). Registered on the root group by
cli/__init__.py; also runs on its own as ``python -m datamove.cli.audit``. Same
conventions as the other commands: exit 0 ok, 1 verification failed (or nothing to
prove), 2 bad input; with ``--json`` the last line of stdout is one JSON object
carrying ``exit_code``, errors too.
The signing key is read by path only and never printed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from datamove.cli.options import (
    CHECKPOINT,
    DATASET,
    HTML_REPORT,
    JSON,
    MANIFEST,
    POLICIES,
    datasets_or_all,
    emit,
    write_html_report,
)
from datamove.cli.options import call as _call
from datamove.cli.options import fail as _fail
from datamove.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput


def _ledger_of(manifest_path: str) -> Any:
    from datamove import api
    from datamove.ledger.tables import Ledger

    manifest = api.load_manifest(manifest_path)
    return manifest, Ledger(manifest.ledger, manifest.ledger_options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def audit() -> None:
    """The tamper-evident audit log: keys, verify, show, prove, checkpoint, acknowledge.

    Every state-changing action is a hash-chained event in <ledger>/audit;
    signed checkpoints of their Merkle tree are in <ledger>/audit_checkpoints.
    docs/FORMAT.md ("Audit log") describes both and how to verify offline.
    """


@audit.command("keygen")
@click.option("--name", default="datamove-audit", show_default=True,
              help="Key name, written in every signature line (no spaces or '+').")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Signer key file to write (mode 0600; never overwritten).")
@click.option("--pubkey-out", type=click.Path(dir_okay=False, path_type=str),
              help="Also write the verifier key here (never overwritten).")
def keygen(name: str, output: str, pubkey_out: str | None) -> None:
    """Make an Ed25519 signing key for audit checkpoints.

    Writes the signer key (a secret: point the manifest's audit.signing_key at
    it) and prints the verifier key, which auditors use with `audit verify
    --pubkey`. Formats are Go's sumdb/note keys. Exit 2 if a file exists.
    """
    from datamove.audit.note import NoteError, Signer
    from datamove.crypto.identities import write_secret_file

    try:
        signer = Signer.generate(name)
    except NoteError as exc:
        _fail(f"--name: {exc}", EXIT_BAD_INPUT, False)
    if pubkey_out and os.path.lexists(pubkey_out):
        _fail(f"{pubkey_out} already exists; not overwriting (choose another --pubkey-out)",
              EXIT_BAD_INPUT, False)
    _call(lambda: write_secret_file(output, signer.encode() + "\n"), False)
    if pubkey_out:
        try:
            with open(pubkey_out, "x", encoding="utf-8") as f:
                f.write(f"{signer.verifier}\n")
        except OSError as exc:
            _fail(f"cannot write {pubkey_out}: {exc.strerror}", EXIT_BAD_INPUT, False)
    click.echo(str(signer.verifier))


@audit.command("verify")
@MANIFEST
@click.option("--pubkey", "pubkey_files", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=str),
              help="Verifier key file (repeatable); checkpoint signatures must verify.")
@CHECKPOINT
@JSON
def verify(manifest: str, pubkey_files: tuple[str, ...], checkpoint_file: str | None,
           as_json: bool) -> None:
    """Recompute the audit log's chain, Merkle roots and checkpoint signatures.

    Names the first bad event (seq and what is wrong), or the range it lies in
    when only signed roots show it (a consistent rewrite). With --checkpoint, a
    log shorter than the held checkpoint, or one whose first events do not have
    its root, fails: that is how truncation and rewrites are caught. With
    --pubkey, events after the last signed checkpoint or seal are reported as
    unvouched. Exit 0 all verified, 1 a problem was found, 2 bad input.
    """
    from datamove.audit.note import read_note_file, read_verifier_file
    from datamove.audit.verify import verify_log

    def go() -> Any:
        _, ledger = _ledger_of(manifest)
        verifiers = [read_verifier_file(p) for p in pubkey_files]
        held = read_note_file(checkpoint_file) if checkpoint_file else None
        return verify_log(ledger, verifiers, held)

    emit(_call(go, as_json), as_json)


@audit.command("show")
@MANIFEST
@click.option("--dataset", metavar="NAME", help="Only events of this dataset.")
@click.option("--key", metavar="KEY", help="Only events of this object key.")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only events of this run.")
@click.option("--action", metavar="ACTION", help="Only this action, e.g. object.copied.")
@click.option("--since", metavar="TIME", help="From this time on (2025-01-31 or RFC 3339).")
@click.option("--until", metavar="TIME", help="Before this time (exclusive).")
@JSON
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row instead of a table.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), hidden=True,
              help="Deprecated: --json or --csv (json here: the canonical texts, one a line).")
def show(manifest: str, dataset: str | None, key: str | None, run_id: str | None,
         action: str | None, since: str | None, until: str | None, as_json: bool,
         as_csv: bool, fmt: str | None) -> None:
    """Audit events, oldest first, filtered by dataset, key, run, action and time.

    With --json the last line of stdout is one object: the events (parsed) and
    exit_code, as for every command. Exit 0 (also when nothing matches), 2 for
    bad input.
    """
    from datamove.audit.query import show as show_events
    from datamove.cli.options import deprecated_spelling, parse_time

    if fmt is not None:  # kept so scripts written for it go on working, output unchanged
        deprecated_spelling("--format", "--json or --csv")
    if as_json and as_csv:
        _fail("--json and --csv: choose one", EXIT_BAD_INPUT, True)

    def go() -> Any:
        _, ledger = _ledger_of(manifest)
        return show_events(ledger, dataset=dataset, key=key, run_id=run_id, action=action,
                           since=parse_time(since, "--since") if since else None,
                           until=parse_time(until, "--until") if until else None)

    found = _call(go, as_json)
    if as_json:
        emit(found, as_json)
    found.render(sys.stdout, fmt or ("csv" if as_csv else "table"))


@audit.command("prove")
@MANIFEST
@click.argument("key")
@click.option("--dataset", metavar="NAME", help="The object's dataset (if keys repeat).")
@CHECKPOINT
@JSON
def prove(manifest: str, key: str, dataset: str | None, checkpoint_file: str | None,
          as_json: bool) -> None:
    """An inclusion proof for the latest audit event of object KEY.

    The proof (leaf index, tree size, audit path, the event, the signed
    checkpoint) verifies offline with sha256 and Ed25519 alone: see
    docs/FORMAT.md. Uses the --checkpoint note if given, else the largest
    stored checkpoint. Exit 0 proved, 1 no event for KEY or the log does not
    match the checkpoint, 2 bad input or no checkpoint covering the event.
    """
    from datamove.audit.note import read_note_file
    from datamove.audit.query import prove as make_proof

    def go() -> Any:
        _, ledger = _ledger_of(manifest)
        held = read_note_file(checkpoint_file) if checkpoint_file else None
        return make_proof(ledger, key, dataset=dataset, held=held)

    proof = _call(go, as_json)
    if proof.error:
        click.echo(f"datamove: {proof.error}", err=True)
    emit(proof, as_json)


@audit.command("checkpoint")
@MANIFEST
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Also write the signed note to this file (replaced atomically).")
@JSON
def checkpoint(manifest: str, output: str | None, as_json: bool) -> None:
    """Sign a checkpoint of the audit log now and print (or export) the note.

    Needs the manifest's audit.signing_key. Keep exported notes outside the
    ledger: `audit verify --checkpoint FILE` then catches truncation and
    rewrites. Exit 0 signed, 2 no signing key, no events yet, or events the key
    cannot vouch for (docs/FORMAT.md, "What a writer vouches for").
    """
    from datamove.api import new_run_id
    from datamove.pipeline.auditing import audit_log_of

    def go() -> str:
        loaded, ledger = _ledger_of(manifest)
        if not loaded.audit.signing_key:
            raise BadInput(f"{manifest}: no audit.signing_key; add `audit: {{signing_key: "
                           "FILE}` (make the key with `datamove audit keygen -o FILE`)")
        log = audit_log_of(loaded)
        note = log.writer(new_run_id()).checkpoint()
        if note is None:
            raise BadInput(f"audit log {ledger.url}/audit has no events yet; nothing to sign")
        if output:
            from datamove.textfile import write_atomic

            write_atomic(output, note)
        return note

    note = _call(go, as_json)
    if as_json:
        from datamove.audit.note import SignedCheckpoint

        body = SignedCheckpoint.parse(note).body
        click.echo(json.dumps({"tree_size": body.size, "root_hash": body.root.hex(),
                               "head_hash": body.head, "note": note, "output": output,
                               "exit_code": EXIT_OK}, ensure_ascii=False))
    else:
        click.echo(note, nl=False)


@audit.command("acknowledge")
@MANIFEST
@click.option("--through", type=int, required=True, metavar="SEQ",
              help="The last event to adopt: the log's last, as the refusal named it.")
@click.option("--reason", required=True, metavar="TEXT",
              help="What the investigation found (recorded in the log).")
@JSON
def acknowledge(manifest: str, through: int, reason: str, as_json: bool) -> None:
    """Adopt events the signing key cannot vouch for, on the record.

    A writer with audit.signing_key refuses to append to (and sign over) events
    after its last checkpoint that no datamove writer holding the key sealed:
    forged ones, or ones written without the key or with another. After an
    investigation, this appends an `audit.acknowledged` event naming them (seq
    range, last hash, your reason) and signs a checkpoint: the events stay in
    the log as unvouched, which `audit verify` lists. It never adopts events
    that do not chain. Exit 0 adopted, 2 nothing to adopt or bad input.
    """
    from datamove.api import new_run_id
    from datamove.ledger.lock import ledger_lock
    from datamove.pipeline.auditing import audit_log_of

    def go() -> dict[str, Any]:
        loaded, _ = _ledger_of(manifest)
        if not loaded.audit.signing_key:
            raise BadInput(f"{manifest}: no audit.signing_key; only the key that signs "
                           "checkpoints can adopt events into what they cover")
        log = audit_log_of(loaded)
        with ledger_lock(loaded.ledger, loaded.ledger_options, command="audit acknowledge"):
            return log.acknowledge(new_run_id(), through, reason)

    done = _call(go, as_json)
    if as_json:
        click.echo(json.dumps({**done, "exit_code": EXIT_OK}, ensure_ascii=False))
    else:
        click.echo(f"adopted events {done['first_seq']}..{done['last_seq']} unvouched "
                   f"(audit.acknowledged at seq {done['seq']}); signed checkpoint:")
        click.echo(done["checkpoint"], nl=False)


@audit.command("residency")
@MANIFEST
@POLICIES
@JSON
@DATASET
@HTML_REPORT
def audit_residency(manifest: str, policies: tuple[str, ...], as_json: bool,
                    datasets: tuple[str, ...], report_path: str | None) -> None:
    """Where every recorded copy lives, judged against the policies' regions rules.

    Per dataset and object: the region of the copy (what its store says now, else
    what was declared when it was copied) and the rules it breaks. --report
    FILE.html also draws it as a page: copies per region and country, the
    violations. Exit 0 all copies where allowed, 1 some outside (or unknown), 2
    bad input.
    """
    from datamove import api
    from datamove.commands.residency import residency

    def go() -> Any:
        if report_path:
            from datamove.reports.html import check_target

            check_target(report_path)
        result = residency(api.load_manifest(manifest), list(policies) or None,
                           datasets=datasets_or_all(datasets))
        if report_path:
            from datamove.reports.views import write_residency

            write_html_report(report_path, lambda: write_residency(report_path, result),
                              result)
        return result

    emit(_call(go, as_json), as_json)


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
    from datamove import api
    from datamove.commands.lineage import write_openlineage

    def go() -> int:
        loaded = api.load_manifest(manifest)
        if output is None:
            return write_openlineage(loaded, sys.stdout, run_ids=list(run_ids) or None)
        with open(output, "w", encoding="utf-8") as out:
            return write_openlineage(loaded, out, run_ids=list(run_ids) or None)

    count = _call(go, False)
    click.echo(f"datamove: {count} {fmt} events", err=True)


if __name__ == "__main__":
    audit()
