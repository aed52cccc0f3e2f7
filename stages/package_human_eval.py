"""Stage `package_human_eval`: data/samples/ + data/clips/ -> data/human_eval/ (a rating study).

Pairs from the same conditioning frames: the model's prediction vs a baseline (copy-last-frame,
or another sample run), both showing the original 4 given frames first, at 64x64 as in the
paper; sides randomized and blinded (pairs.json and file names reveal nothing; key.json does).
Invite raters with `vqvp human-eval invite data/human_eval -n N`, serve it with `vqvp human-eval serve
data/human_eval`, analyze with `vqvp human-eval analyze`.
Judgments are stored beside the package (see `vqvp human-eval --help`), never inside this DVC
out, so re-running the stage cannot delete them.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import BadInputError, StageContext, run_stage
from vqvp_core.clip import GIVEN_FRAMES as GIVEN
from stages.training import log_dataset

CLIPS, SAMPLES, OUT = Path("data/clips"), Path("data/samples"), Path("data/human_eval")


def baseline_videos(spec: str, originals, clip_ids):
    """The baseline's 16-frame videos for these clips."""
    import numpy as np
    import pandas as pd

    from vqvp_core.metrics import copy_last_frame

    if spec == "copy-last-frame":
        return copy_last_frame(originals, GIVEN).numpy()
    folder = Path(spec)
    if not (folder / "predictions.npy").exists():
        raise BadInputError(f"human_eval.baseline = {spec!r}: expected 'copy-last-frame' or a sample folder "
                            "holding predictions.npy and manifest.parquet")
    other = pd.read_parquet(folder / "manifest.parquet")
    rows = {cid: i for i, cid in enumerate(other.clip_id)}
    missing = [c for c in clip_ids if c not in rows]
    if missing:
        raise BadInputError(f"human_eval.baseline {spec}: no prediction for {len(missing)} clips (e.g. {missing[0]})")
    preds = np.load(folder / "predictions.npy", mmap_mode="r")
    return np.stack([preds[rows[c]] for c in clip_ids])


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.human_eval.package import build_package

    p = ctx.params.human_eval
    from vqvp_core.sampling.samples import load_samples

    log_dataset(ctx, SAMPLES, context="study")
    preds, originals, manifest = load_samples(SAMPLES, CLIPS)
    n = min(p.pairs, len(preds))
    ids = manifest.clip_id[:n].tolist()
    baseline = baseline_videos(p.baseline, originals[:n], ids)
    names = ("vqvp", p.baseline_name or (p.baseline if p.baseline == "copy-last-frame" else Path(p.baseline).name))
    build_package(OUT, originals[:n, :GIVEN], preds[:n], baseline, names=names, clip_ids=ids,
                            fps=ctx.params.ingest.fps, size=p.size, seed=p.seed, min_judgments=p.min_judgments,
                            replace_judgments=True)
    ctx.log_metrics({"pairs": n, "min_judgments": p.min_judgments})
    ctx.mlflow.log_artifact(str(OUT / "study.json"))
    print(f"package_human_eval: {n} blinded pairs (vqvp vs {names[1]}) -> {OUT}/; invite raters "
          f"with `vqvp human-eval invite {OUT} -n N`, then `vqvp human-eval serve {OUT}`")


def main(argv: list[str] | None = None) -> int:
    return run_stage("package_human_eval", argv, __doc__.splitlines()[0], _body, section="human_eval")


if __name__ == "__main__":
    raise SystemExit(main())
