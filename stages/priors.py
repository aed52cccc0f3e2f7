"""What the two prior stages share: the latents, bits-per-code evaluation and its baselines."""
from __future__ import annotations

import math
from pathlib import Path

import torch

LATENTS = Path("data/latents")
INPUTS = [LATENTS]


def splits():
    """(train set, held-out split name, held-out set) from data/latents."""
    from stages.training import held_out
    from vqvp_core.data.latents import LatentSet

    split, held = held_out(lambda name: LatentSet(LATENTS, name))
    return LatentSet(LATENTS, "train"), split, held


def evaluate_bits(model, data, batch_size: int, device, max_items: int | None = None) -> float:
    """Mean bits per code over (the first max_items clips of) a split: teacher forcing, eval mode."""
    from torch.utils.data import DataLoader, Subset

    from vqvp_core.models.pixelcnn import bits_per_code
    from vqvp_core.train.loop import to_device

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        subset = Subset(data, range(min(len(data), max_items or len(data))))
        for batch in DataLoader(subset, batch_size=batch_size):
            logits, targets = model.logits_and_targets(to_device(batch, device))
            total += bits_per_code(logits, targets).item() * targets.numel()
            count += targets.numel()
    return total / max(count, 1)


def baselines(train_codes, held_codes, n_codes: int) -> dict[str, float]:
    from vqvp_core.metrics import unigram_bits

    return {"baseline/uniform_bits": math.log2(n_codes),
            "baseline/unigram_bits": unigram_bits(torch.from_numpy(train_codes), torch.from_numpy(held_codes), n_codes)}


def run_prior_stage(ctx, name: str, section: str, model_cls, codes_key: str, first_predicted: int,
                    build_model=None) -> None:
    """The body of train_top_prior / train_bottom_prior: train with teacher forcing, evaluate bits
    per code on train and held-out clips against the uniform and unigram baselines, register.
    ``build_model(cfg, train_set)`` builds the model where the data shapes it (default
    ``model_cls(cfg)``)."""
    from stages.common import rank
    from stages.training import Recipe, finish, train

    p = getattr(ctx.params, section)
    cfg = p.model
    train_set, split, held = splits()
    build = build_model or (lambda c, _data: model_cls(c))
    trained = train(ctx, Recipe(name, lambda: build(cfg, train_set), p.train, train_set, held, INPUTS, {section}))
    if rank() != 0:
        return
    model, trainer, final = trained.model, trained.trainer, trained.final
    bs, n = trainer.cfg.batch_size, p.eval_clips
    metrics = {**final, "eval/split": split,
               "eval/train_bits_per_code": evaluate_bits(model, train_set, bs, trainer.device, n),
               "eval/bits_per_code": evaluate_bits(model, held, bs, trainer.device, n),
               **baselines(train_set.all(codes_key)[:, first_predicted:],
                           held.all(codes_key)[:n, first_predicted:], cfg.n_codes)}
    out = Path(f"models/{section}")
    uri = finish(ctx, trained, out, Path(f"metrics/{section}.json"), metrics, p.register_as, p.alias)
    print(f"{name}: step {final['step']}, {split} bits/code {metrics['eval/bits_per_code']:.3f} "
          f"(train {metrics['eval/train_bits_per_code']:.3f}; unigram {metrics['baseline/unigram_bits']:.3f}, "
          f"uniform {metrics['baseline/uniform_bits']:.3f})" + (f"; registered as {uri}" if uri else ""))
