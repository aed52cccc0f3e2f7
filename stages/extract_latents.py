"""Stage `extract_latents`: data/clips/ + models/vqvae/ -> data/latents/.

Encodes every clip with the trained VQ-VAE (eval mode, so the codebooks stay fixed): the code
grids of the whole clip per level, and of its conditioning frames encoded on their own. Written
as int16 .npy arrays in manifest order, streamed in batches (bounded memory), atomically.

    top.npy          (N, T/4, H/8, W/8)   top codes of the 16-frame clip
    bottom.npy       (N, T/2, H/4, W/4)   bottom codes
    cond_top.npy     (N, 1, H/8, W/8)     the 4 conditioning frames alone: top
    cond_bottom.npy  (N, 2, H/4, W/4)     ... and bottom
    manifest.parquet clip_id, split, row  (joins data/clips/manifest.parquet on clip_id)
    stats.json       shapes, counts per split, codes in use per level
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.common import BadInputError, StageContext, run_stage
from stages.training import log_dataset

CLIPS = Path("data/clips")
MODEL = Path("models/vqvae/model.pt")
OUT = Path("data/latents")
ARRAYS = ("top", "bottom", "cond_top", "cond_bottom")


def load_vqvae(path: Path, device):
    from vqvp_core.models.registry import ModelFileError, load_model

    if not path.exists():
        raise BadInputError(f"{path} not found: run the train_vqvae stage first")
    try:
        return load_model(path, "vqvae", device)
    except ModelFileError as exc:
        raise BadInputError(str(exc)) from exc


def _body(ctx: StageContext, args) -> None:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from vqvp_core.atomic import atomic_dir
    from vqvp_core.data.clips import ClipSet
    from vqvp_core.metrics import codes_in_use
    from vqvp_core.models.vqvae import clips_to_input
    from vqvp_core.train.loop import resolve_device

    p = ctx.params.extract_latents
    device = resolve_device(p.device)
    for path in (CLIPS, MODEL.parent):
        log_dataset(ctx, path, context="encoding")
    model = load_vqvae(MODEL, device)
    clips = ClipSet(CLIPS)
    n, cf = len(clips), p.cond_frames
    (tt, ht, wt), (tb, hb, wb) = model.config.latent_shapes(ctx.params.ingest.clip_len, ctx.params.ingest.size)
    shapes = {"top": (n, tt, ht, wt), "bottom": (n, tb, hb, wb),
              "cond_top": (n, cf // 4, ht, wt), "cond_bottom": (n, cf // 2, hb, wb)}
    with atomic_dir(OUT) as tmp:
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=np.int16, shape=s)
                  for k, s in shapes.items()}
        with torch.no_grad():
            for start in tqdm(range(0, n, p.batch_size), desc="extract_latents", unit="batch",
                              disable=args.no_progress):
                stop = min(start + p.batch_size, n)
                x = clips_to_input(np.stack([clips[i] for i in range(start, stop)]), device)
                codes = dict(zip(ARRAYS, (*model.encode(x), *model.encode_cond(x[:, :, :cf]))))
                for key, value in codes.items():
                    arrays[key][start:stop] = value.cpu().numpy().astype(np.int16)
        for array in arrays.values():
            array.flush()
        k = model.config.n_codes
        stats = {"clips": n, "shapes": {key: list(s[1:]) for key, s in shapes.items()}, "n_codes": k,
                 "splits": {s: int((clips.manifest.split == s).sum()) for s in ("train", "val", "test")},
                 "top_codes_in_use": codes_in_use(torch.from_numpy(np.asarray(arrays["top"])), k),
                 "bottom_codes_in_use": codes_in_use(torch.from_numpy(np.asarray(arrays["bottom"])), k)}
        del arrays
        manifest = clips.manifest[["clip_id", "split"]].assign(row=np.arange(n))
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    ctx.log_metrics({"clips": n, "top_codes_in_use": stats["top_codes_in_use"],
                     "bottom_codes_in_use": stats["bottom_codes_in_use"]})
    ctx.mlflow.log_artifact(str(OUT / "stats.json"))
    print(f"extract_latents: {n} clips -> {OUT}/ (top {shapes['top'][1:]}, bottom {shapes['bottom'][1:]}; "
          f"codes in use top {stats['top_codes_in_use']:.0%}, bottom {stats['bottom_codes_in_use']:.0%})")


def main(argv: list[str] | None = None) -> int:
    return run_stage("extract_latents", argv, __doc__.splitlines()[0], _body)


if __name__ == "__main__":
    raise SystemExit(main())
