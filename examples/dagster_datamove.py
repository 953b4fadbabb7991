"""Run a datamove manifest from Dagster (docs/API.md, "Orchestrators").

One asset, ``datamove_copy``: it loads the manifest through the public API, runs
it with a progress callback that logs to Dagster, and fails the materialization
when any object failed or a dataset stopped (datamove's exit code 1), so the
orchestrator retries or alerts as it would for any failed step. A rerun copies
only what is missing (datamove's ledger), so Dagster's retries are safe.

Try it (``pip install 'datamove[examples]'``)::

    DATAMOVE_MANIFEST=manifests/quickstart.yaml dagster dev -f examples/dagster_datamove.py

or in-process, as tests/test_examples.py does::

    from dagster import materialize
    materialize([datamove_copy],
                run_config={"ops": {"datamove_copy": {"config": {"manifest": "m.yaml"}}}})
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations
# (the config class) at definition time.
import os

import dagster as dg

from datamove import api


class DatamoveConfig(dg.Config):
    """Which manifest to run, and optionally which of its datasets."""

    manifest: str = os.environ.get("DATAMOVE_MANIFEST", "manifest.yaml")
    datasets: list[str] | None = None


@dg.asset(description="The manifest's destinations, copied and verified by datamove.")
def datamove_copy(context: dg.AssetExecutionContext,
                  config: DatamoveConfig) -> dg.MaterializeResult:
    # Bad input (an invalid manifest, an unreachable store) raises api.DatamoveError
    # (exit_code 2, or 3 when a policy refuses the run): Dagster fails the step with it.
    manifest = api.load_manifest(config.manifest)

    def on_event(event: api.ProgressEvent) -> None:
        # Called on this thread, in order; keep it quick (the run waits for it).
        if isinstance(event, api.ObjectDone) and event.failed:
            context.log.warning(f"{event.dataset}/{event.key} failed: {event.error}")
        elif isinstance(event, api.DatasetFinished):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(event.counts.items()) if v)
            context.log.info(f"dataset {event.dataset} finished: {counts}")

    report = api.run(manifest, datasets=config.datasets, on_event=on_event)
    metadata = {
        "run_id": report.run_id,
        "exit_code": report.exit_code,
        "copied": report.total("copied"),
        "skipped": report.total("skipped"),
        "failed": report.total("failed"),
        "bytes_copied": sum(ds.bytes["copied"] for ds in report.datasets.values()),
        "seconds": round(report.seconds, 3),
    }
    if not report.ok:
        listed = "; ".join(f"{p.dataset}/{p.key}: {p.error}" for p in report.problems[:5])
        raise dg.Failure(description=f"datamove run {report.run_id} ended with exit code "
                                     f"{report.exit_code}: {report.problem_count} problems "
                                     f"({listed})", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


defs = dg.Definitions(assets=[datamove_copy])
