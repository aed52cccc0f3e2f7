"""Stage `train_bottom_prior`: data/latents/ -> models/bottom_prior/model.pt (+ metrics/bottom_prior.json).

Teacher-forced training of the 2D PixelCNN on bottom slices 2..7; its conditioning stack sees
the whole top grid and a window of past bottom slices. The given steps (top step 0, bottom
slices 0-1) are the conditioning frames' own codes, in training as in sampling. Reports bits
per code on train and held-out clips against the uniform and unigram baselines.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import StageContext, rank, run_stage
from stages.priors import INPUTS, TeacherForced, baselines, evaluate_bits, splits, step_fn
from stages.training import finish, train

OUT = Path("models/bottom_prior")
METRICS = Path("metrics/bottom_prior.json")


def logits_and_targets(model, batch):
    import torch

    n_given = model.config.n_given
    top = torch.cat([batch["cond_top"], batch["top"][:, 1:]], 1)               # (B, Tt, Ht, Wt)
    bottom = torch.cat([batch["cond_bottom"], batch["bottom"][:, n_given:]], 1)  # (B, Tb, Hb, Wb)
    logits = model.forward_all_slices(bottom, top)                             # (B, K, Tb-2, Hb, Wb)
    return logits, bottom[:, n_given:]


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig

    p = ctx.params.bottom_prior
    cfg = BottomPriorConfig.from_dict(p.model)
    train_set, split, held = splits()
    wrapped, trainer, final = train(ctx, "train_bottom_prior", lambda: TeacherForced(BottomPrior(cfg), logits_and_targets),
                                    cfg.to_dict(), p.train, train_set, held, step_fn, INPUTS, {"bottom_prior"})
    model = wrapped.prior
    if rank() != 0:
        return
    bs = trainer.cfg.batch_size
    metrics = {**final, "eval/split": split,
               "eval/train_bits_per_code": evaluate_bits(model, train_set, bs, trainer.device, logits_and_targets, p.eval_clips),
               "eval/bits_per_code": evaluate_bits(model, held, bs, trainer.device, logits_and_targets, p.eval_clips),
               **baselines(train_set.all("bottom")[:, cfg.n_given:], held.all("bottom")[: p.eval_clips, cfg.n_given:],
                           cfg.n_codes)}
    uri = finish(ctx, model, trainer, final, OUT, METRICS, metrics, p.register_as, p.alias)
    print(f"train_bottom_prior: step {final['step']}, {split} bits/code {metrics['eval/bits_per_code']:.3f} "
          f"(train {metrics['eval/train_bits_per_code']:.3f}; unigram {metrics['baseline/unigram_bits']:.3f}, "
          f"uniform {metrics['baseline/uniform_bits']:.3f})" + (f"; registered as {uri}" if uri else ""))


def main(argv: list[str] | None = None) -> int:
    return run_stage("train_bottom_prior", argv, __doc__.splitlines()[0], _body, section="bottom_prior")


if __name__ == "__main__":
    raise SystemExit(main())
