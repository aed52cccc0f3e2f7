"""Stage `train_bottom_prior`: data/latents/ -> models/bottom_prior/model.pt (+ metrics/bottom_prior.json).

Teacher-forced training of the 2D PixelCNN on bottom slices 2..7 (with
`bottom_prior.model.scheduled_sampling`, part of the input codes are the model's own draws); its
conditioning stack sees the whole top grid and a window of past bottom slices. The given steps
(top step 0, bottom slices 0-1) are the conditioning frames' own codes, in training as in
sampling. Reports bits per code on train and held-out clips against the uniform and unigram
baselines.
"""
from __future__ import annotations

from stages.common import StageContext, run_stage
from stages.priors import run_prior_stage


def build_model(cfg, train_set):
    """The bottom prior; with ``code_weight_power`` > 0 its loss weights come from the training
    set's counts of the codes it predicts (slices n_given..); with autoregressive ``own_past`` draws,
    the cached slice sampler."""
    import torch

    from vqvp_core.models.bottom_prior import BottomPrior

    model = BottomPrior(cfg)
    if cfg.own_past > 0 and cfg.own_past_draws == "autoregressive":
        from vqvp_core.sampling.cached import sample_slices_given_past

        model.slice_sampler = sample_slices_given_past
    if cfg.code_weight_power > 0:
        codes = torch.from_numpy(train_set.all("bottom")[:, cfg.n_given:]).long()
        model.set_code_counts(torch.bincount(codes.flatten(), minlength=cfg.n_codes))
    return model


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.models.bottom_prior import BottomPrior

    run_prior_stage(ctx, "train_bottom_prior", "bottom_prior", BottomPrior, "bottom",
                    ctx.params.bottom_prior.model.n_given, build_model)


def main(argv: list[str] | None = None) -> int:
    return run_stage("train_bottom_prior", argv, __doc__.splitlines()[0], _body, section="bottom_prior",
                     distributed=True)


if __name__ == "__main__":
    raise SystemExit(main())
