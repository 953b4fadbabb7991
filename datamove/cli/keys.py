"""The key commands: ``keys`` (generate, recipient, rotate) and the file commands
``encrypt`` and ``decrypt`` (age v1, interoperable with age and rage).

Thin like every command module: the crypto (which imports ``cryptography``) is
imported inside each command, never at the top.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from datamove.cli.options import (
    DATASET,
    JSON,
    MANIFEST,
    OPS,
    PROGRESS,
    RECIPIENTS_FILE_OPTS,
    SCHEDULER,
    call,
    datasets_or_all,
    deprecated_spelling,
    fail,
    finish,
    identity_option,
    kms_options,
    progress_of,
)
from datamove.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from datamove.pipeline.report import Report

PASSPHRASE_HELP = "the passphrase in the environment variable DATAMOVE_PASSPHRASE"


@click.group()
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
@kms_options
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
        fail("--keep needs -o FILE", EXIT_BAD_INPUT, False)
    if keep and output is not None and os.path.exists(output):
        ref = IdentityRef.of(output, kms_context=kms_context, kms_region=kms_region,
                             kms_endpoint_url=kms_endpoint_url)
        for identity in call(lambda: load_identities(ref), False):
            click.echo(str(identity.recipient))
        return
    recipient, text = call(lambda: generate_identity_file(
        passphrase=passphrase, kms_key=kms_key, kms_context=kms_context,
        kms_region=kms_region, kms_endpoint_url=kms_endpoint_url), False)
    if output is None:
        click.echo(text, nl=False)
        click.echo(f"Public key: {recipient}", err=True)
        return
    call(lambda: write_secret_file(output, text), False)
    click.echo(recipient)


@keys.command("recipient")
@click.option("-i", "--identity", "identity_files", multiple=True, required=True,
              metavar="FILE", help="Identity file, any form (repeatable).")
@kms_options
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
        for identity in call(lambda ref=ref: load_identities(ref), False):
            click.echo(str(identity.recipient))


@keys.command("rotate")
@MANIFEST
@click.option(*RECIPIENTS_FILE_OPTS, "recipients_file", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=str),
              help="The new recipients (age1… lines): every object is re-wrapped for them. "
                   "Required.")
@click.option("--recipients", "old_recipients_file", hidden=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Deprecated spelling of --recipients-file.")
@identity_option("Identity file (any form) that opens the current headers.")
@DATASET
@SCHEDULER
@JSON
@PROGRESS
@OPS
def keys_rotate(manifest: str, recipients_file: str | None, old_recipients_file: str | None,
                identity_file: str | None, datasets: tuple[str, ...], scheduler: str | None,
                as_json: bool, progress: bool) -> None:
    """Re-wrap the headers of MANIFEST's encrypted objects for new recipients
    (-R/--recipients-file FILE).

    Only each object's age header changes (same file key, same payload bytes), so
    rotation costs a header per object, not a copy. Exit codes as for `run`.
    """
    from datamove import api
    from datamove.commands.rotate import rotate

    if old_recipients_file is not None:
        deprecated_spelling("--recipients", "-R/--recipients-file")
    if recipients_file is not None and old_recipients_file is not None:
        raise click.UsageError("give --recipients-file once (--recipients is its old name)")
    recipients_file = recipients_file or old_recipients_file
    if recipients_file is None:
        raise click.MissingParameter(param_hint="'-R' / '--recipients-file'",
                                     param_type="option")

    def go() -> Report:
        return rotate(api.load_manifest(manifest), recipients_file,
                      identity_file=identity_file, datasets=datasets_or_all(datasets),
                      scheduler=scheduler, progress=progress_of(progress, as_json))

    finish(go, as_json)


IN_OUT_HELP = """IN and OUT are local paths, URLs (s3://bucket/key, any fsspec URL)
    or - for stdin/stdout. A file OUT appears only when complete (temporary
    name, then rename; S3: upload completed only on success)."""


def _with_in_out_help(command: Callable[..., Any]) -> Callable[..., Any]:
    """Put the shared IN/OUT paragraph into a command's help (click reads __doc__)."""
    command.__doc__ = (command.__doc__ or "").replace("{in_out}", IN_OUT_HELP)
    return command


@click.command()
@click.option("-r", "--recipient", "recipients", multiple=True, metavar="age1…",
              help="Encrypt to this recipient (repeatable).")
@click.option(*RECIPIENTS_FILE_OPTS, "recipients_files", multiple=True, metavar="FILE",
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

    call(lambda: encrypt_file(src, dst, list(recipients), list(recipients_files), passphrase,
                              armor=armor), False)


@click.command()
@click.option("-i", "--identity", "identity_files", multiple=True, metavar="FILE",
              help="Identity file, any form (plaintext, passphrase-protected, KMS-wrapped); "
                   "repeatable.")
@click.option("-p", "--passphrase", is_flag=True,
              help=f"Also try {PASSPHRASE_HELP} (for files encrypted with -p).")
@kms_options
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

    call(lambda: decrypt_file(src, dst, list(identity_files), passphrase,
                              kms_context=kms_context, kms_region=kms_region,
                              kms_endpoint_url=kms_endpoint_url), False)
