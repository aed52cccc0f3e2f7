"""Stage `ingest`: raw videos (folder, s3://, Kinetics CSV, synthetic) -> data/clips/.

Reads `params.yaml: ingest`; writes `data/clips/` (shards, manifest.parquet, rejected.csv,
stats.json) atomically; logs counts, the rejected report and a contact sheet to MLflow.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.common import BadInputError, StageContext, run_stage
from vqvp_core.atomic import write_text

OUT = Path("data/clips")
METRICS = Path("metrics/ingest.json")
PREVIEW_CLIPS = 8  # rows in the contact sheet logged to MLflow


def log_source(ctx: StageContext, params, digest: str) -> None:
    """The raw source as the run's dataset input: the end of every lineage chain."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    uri = params.source if params.source != "synthetic" else "synthetic://vqvp_core.data.synthetic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source = resolve_dataset_source(str(Path(uri).resolve()) if "://" not in uri else uri)
        except Exception:  # a URL scheme MLflow has no source type for: record it as code-like text
            from mlflow.data.code_dataset_source import CodeDatasetSource

            source = CodeDatasetSource({"uri": uri})
    ctx.mlflow.log_input(MetaDataset(source, name="raw", digest=digest), context="source")


def _body(ctx: StageContext, args) -> None:
    import numpy as np

    from vqvp_core.data.clips import ClipSet
    from vqvp_core.data.ingest import IngestError, run_ingest
    from vqvp_core.data.sources import SourceError
    from vqvp_core.viz import contact_sheet, save_png

    params = ctx.params.ingest
    try:
        summary = run_ingest(params, OUT, progress=not args.no_progress)
    except (IngestError, SourceError) as exc:
        raise BadInputError(str(exc)) from exc
    ctx.log_metrics({"videos": summary.videos, "videos_ok": summary.videos_ok, "clips": summary.clips, "rejected": summary.rejected,
                     "shards": summary.shards, "seconds": summary.seconds,
                     "frames_per_s": summary.frames / max(summary.seconds, 1e-9),
                     **{f"clips_{k}": v for k, v in summary.splits.items()}})
    write_text(METRICS, json.dumps({k: v for k, v in summary.to_dict().items() if k != "seconds"},
                                   indent=2, sort_keys=True) + "\n")
    log_source(ctx, params, summary.source_digest)
    ctx.mlflow.log_artifact(str(OUT / "rejected.csv"))
    ctx.mlflow.log_artifact(str(OUT / "stats.json"))
    clips = ClipSet(OUT)
    picks = [clips[i] for i in range(0, len(clips), max(1, len(clips) // PREVIEW_CLIPS))][:PREVIEW_CLIPS]
    with ctx.artifact_dir("preview") as tmp:
        save_png(contact_sheet(np.stack(picks)), tmp / "clips.png")
    print(f"ingest: {summary.clips} clips from {summary.videos_ok} of {summary.videos} videos "
          f"(train/val/test {summary.splits['train']}/{summary.splits['val']}/{summary.splits['test']}), "
          f"{summary.rejected} inputs rejected (see {OUT / 'rejected.csv'}), {summary.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    return run_stage("ingest", argv, __doc__.splitlines()[0], _body)


if __name__ == "__main__":
    raise SystemExit(main())
