"""Stage `train_top_prior`: data/latents/ -> models/top_prior/model.pt (+ metrics/top_prior.json).

Teacher-forced training of the 3D PixelCNN on the top codes of the 3 predicted steps,
conditioned on the conditioning frames' own codes (as in sampling). Reports bits per code on
train and held-out clips against the uniform (log2 K) and unigram (code-frequency) baselines.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import StageContext, rank, run_stage
from stages.priors import INPUTS, TeacherForced, baselines, evaluate_bits, splits, step_fn
from stages.training import finish, train

OUT = Path("models/top_prior")
METRICS = Path("metrics/top_prior.json")


def logits_and_targets(model, batch):
    targets = batch["top"][:, 1:]  # (B, 3, Ht, Wt): the predicted steps; step 0 is given
    return model(targets, batch["cond_top"], batch["cond_bottom"]), targets


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.models.top_prior import TopPrior, TopPriorConfig

    p = ctx.params.top_prior
    cfg = TopPriorConfig.from_dict(p.model)
    train_set, split, held = splits()
    wrapped, trainer, final = train(ctx, "train_top_prior", lambda: TeacherForced(TopPrior(cfg), logits_and_targets),
                                    cfg.to_dict(), p.train, train_set, held, step_fn, INPUTS, {"top_prior"})
    model = wrapped.prior
    if rank() != 0:
        return
    bs = trainer.cfg.batch_size
    metrics = {**final, "eval/split": split,
               "eval/train_bits_per_code": evaluate_bits(model, train_set, bs, trainer.device, logits_and_targets, p.eval_clips),
               "eval/bits_per_code": evaluate_bits(model, held, bs, trainer.device, logits_and_targets, p.eval_clips),
               **baselines(train_set.all("top")[:, 1:], held.all("top")[: p.eval_clips, 1:], cfg.n_codes)}
    uri = finish(ctx, model, trainer, final, OUT, METRICS, metrics, p.register_as, p.alias)
    print(f"train_top_prior: step {final['step']}, {split} bits/code {metrics['eval/bits_per_code']:.3f} "
          f"(train {metrics['eval/train_bits_per_code']:.3f}; unigram {metrics['baseline/unigram_bits']:.3f}, "
          f"uniform {metrics['baseline/uniform_bits']:.3f})" + (f"; registered as {uri}" if uri else ""))


def main(argv: list[str] | None = None) -> int:
    return run_stage("train_top_prior", argv, __doc__.splitlines()[0], _body, section="top_prior")


if __name__ == "__main__":
    raise SystemExit(main())
