"""Stage `train_top_prior`: data/latents/ -> models/top_prior/model.pt (+ metrics/top_prior.json).

Teacher-forced training of the 3D PixelCNN on the top codes of the 3 predicted steps,
conditioned on the conditioning frames' own codes (as in sampling). Reports bits per code on
train and held-out clips against the uniform (log2 K) and unigram (code-frequency) baselines.
"""
from __future__ import annotations

from stages.common import StageContext, run_stage
from stages.priors import run_prior_stage


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.models.top_prior import TopPrior

    run_prior_stage(ctx, "train_top_prior", "top_prior", TopPrior, "top", 1)


def main(argv: list[str] | None = None) -> int:
    return run_stage("train_top_prior", argv, __doc__.splitlines()[0], _body, section="top_prior",
                     distributed=True)


if __name__ == "__main__":
    raise SystemExit(main())
