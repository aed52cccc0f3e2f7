"""Stage `train_vqvae`: data/clips/ -> models/vqvae/model.pt (+ metrics/vqvae.json).

Trains the hierarchical 3D VQ-VAE with the shared Trainer (resumable checkpoints in
checkpoints/train_vqvae/, precision auto, DDP under torchrun), then measures reconstruction
PSNR and codes in use per level on held-out clips, logs original | reconstruction videos,
and registers the model in MLflow.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import StageContext, rank, run_stage
from stages.training import Recipe, finish, held_out, train

CLIPS = Path("data/clips")
OUT = Path("models/vqvae")
METRICS = Path("metrics/vqvae.json")


class ClipTensors:
    """A split of data/clips as uint8 tensors (T, H, W, 3) for the DataLoader."""

    def __init__(self, split: str):
        from vqvp_core.data.clips import ClipSet

        self.clips = ClipSet(CLIPS, split)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(self.clips[i])


def evaluate(model, data: ClipTensors, n: int, batch: int, device) -> tuple[dict[str, float], object]:
    """PSNR (0-255 scale) and codebook use over up to n held-out clips; the first batch's clips."""
    import torch

    from vqvp_core.metrics import codes_in_use, perplexity, psnr_uint8
    from vqvp_core.models.vqvae import clips_to_input, output_to_uint8

    model.eval()
    psnrs, tops, bottoms, first = [], [], [], None
    with torch.no_grad():
        for start in range(0, min(n, len(data)), batch):
            clips = torch.stack([data[i] for i in range(start, min(start + batch, n, len(data)))])
            top, bottom = model.encode(clips_to_input(clips, device))
            recon = output_to_uint8(model.decode_codes(top, bottom)).cpu()
            psnrs.append(psnr_uint8(recon, clips))
            tops.append(top.cpu()), bottoms.append(bottom.cpu())
            first = first if first is not None else (clips, recon)
    top, bottom, k = torch.cat(tops), torch.cat(bottoms), model.config.n_codes
    return {"psnr": torch.cat(psnrs).mean().item(), "clips": int(top.shape[0]),
            "top_codes_in_use": codes_in_use(top, k), "bottom_codes_in_use": codes_in_use(bottom, k),
            "top_perplexity": perplexity(top, k), "bottom_perplexity": perplexity(bottom, k)}, first


def log_reconstructions(ctx: StageContext, clips, recon, fps: float) -> None:
    """original | reconstruction, side by side: a PNG contact sheet and an mp4 per clip."""
    import torch

    from vqvp_core.video.write import write_video
    from vqvp_core.viz import contact_sheet, save_png

    pairs = torch.cat([clips, recon], dim=3).numpy()  # (N, T, H, 2W, 3)
    with ctx.artifact_dir("reconstructions") as tmp:
        save_png(contact_sheet(pairs), tmp / "original_vs_reconstruction.png")
        for i, pair in enumerate(pairs):
            write_video(tmp / f"clip{i}_original_vs_reconstruction.mp4", pair, fps=fps)


def merge_codebooks(model, top: int, bottom: int) -> dict[str, int]:
    """vqvae.merge_top_codes / merge_bottom_codes: each codebook merged into that many codes
    (EMAQuantizer.merge) after training, before the held-out evaluation and the model file, so
    both measure what the priors will see."""
    done = {}
    for level, k, quantizer in (("top", top, model.quantize_t), ("bottom", bottom, model.quantize_b)):
        if k:
            quantizer.merge(k)
            done[f"merged_{level}_codes"] = k
            print(f"train_vqvae: {level} codebook merged into {k} codes")
    return done


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.models.vqvae import VQVAE

    p = ctx.params.vqvae
    cfg = p.model
    split, val = held_out(ClipTensors)
    trained = train(ctx, Recipe("train_vqvae", lambda: VQVAE(cfg), p.train, ClipTensors("train"), val,
                                [CLIPS], {"ingest", "vqvae"}))
    if rank() != 0:
        return
    final, trainer = trained.final, trained.trainer
    merged = merge_codebooks(trained.model, p.merge_top_codes, p.merge_bottom_codes)
    ev, (clips, recon) = evaluate(trained.model, val, p.eval_clips, trainer.cfg.batch_size, trainer.device)
    metrics = {**final, **{f"eval/{k}": v for k, v in ev.items()}, "eval/split": split, **merged}
    log_reconstructions(ctx, clips[: p.log_videos], recon[: p.log_videos], ctx.params.ingest.fps)
    uri = finish(ctx, trained, OUT, METRICS, metrics, p.register_as, p.alias)
    print(f"train_vqvae: step {final['step']}, held-out ({split}) PSNR {ev['psnr']:.2f} dB, codes in use "
          f"top {ev['top_codes_in_use']:.0%} bottom {ev['bottom_codes_in_use']:.0%}; model {OUT / 'model.pt'}"
          + (f", registered as {uri}" if uri else ""))


def main(argv: list[str] | None = None) -> int:
    return run_stage("train_vqvae", argv, __doc__.splitlines()[0], _body, section="vqvae",
                     distributed=True)


if __name__ == "__main__":
    raise SystemExit(main())
