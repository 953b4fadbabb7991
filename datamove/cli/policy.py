"""``datamove policy``: policies as code (policy/rules.py), checked without moving
anything. The rules engine is imported inside the command."""

from __future__ import annotations

import click

from datamove.cli.options import DATASET, JSON, MANIFEST, POLICIES, call, datasets_or_all, emit


@click.group()
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
    from datamove import api
    from datamove.policy.rules import check

    emit(call(lambda: check(api.load_manifest(manifest), list(policies) or None,
                            datasets=datasets_or_all(datasets)), as_json), as_json)
