"""Which prior loses the objects? Run in a workspace after `make demo` (or `vqvp stage sample`).

Decodes, for the sampled test clips (data/samples/manifest.parquet), and scores with the motion
metric (vqvp_core.eval.motion; synthetic sources only):

* ``model``: top and bottom codes both sampled (what `sample` does);
* ``true_top``: the top codes of the whole clip (encoded from the ground truth), the bottom sampled:
  if this finds the objects where ``model`` does not, the top prior loses them;
* ``one_step``: the true top, and every bottom slice drawn given the *true* slices before it (none
  given the prior's own draws): the errors of one step of the bottom prior, none compounded; the
  gap to ``true_top`` is what compounding costs;
* ``copied_bottom``: the true top, and the last given bottom slice repeated (copy-last in code
  space, no prior at all): what the bottom prior must beat to add anything;
* ``reconstruction``: the clip's own codes decoded (the VQ-VAE's ceiling).

It also prints how much the decoder uses the top level: the reconstruction's PSNR with each clip's
own top codes, with another clip's and with one code everywhere. Equal figures: the bottom codes
carry the picture, and no top code, true or drawn, can hold an object in place.

With ``--one-slice N``: only bottom slice N is drawn, given the true top and the true slices before
it (all other slices the clip's own codes), and the objects found at its two frames are printed by
kind (digit / shape), speed and height, against the reconstruction's: what one step of the bottom
prior loses, before any error compounds.

    python scripts/diagnose_priors.py --temperature 0.4 --draws 2
    python scripts/diagnose_priors.py --one-slice 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, default=None, help="default: sample.temperature of params.yaml")
    ap.add_argument("--draws", type=int, default=2, help="draws per clip of the sampled systems")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one-slice", type=int, default=None, metavar="N",
                    help="draw only bottom slice N given the true past; objects found by kind, speed, height")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path.cwd()))

    import numpy as np
    import torch

    from vqvp_core.config import load_params
    from vqvp_core.data.ingest import synthetic_config
    from vqvp_core.eval.motion import motion_metrics, summary
    from vqvp_core.metrics import copy_last_frame, frame_psnr
    from vqvp_core.models.vqvae import clips_to_input, output_to_uint8
    from vqvp_core.sampling.cached import sample_bottom_cached, sample_bottom_slice_cached, sample_top_cached
    from vqvp_core.sampling.predict import Predictor
    from vqvp_core.sampling.samples import load_samples

    params = load_params()
    if params.ingest.source != "synthetic":
        raise SystemExit(f"ingest.source is {params.ingest.source!r}: the motion metric needs the synthetic generator")
    temperature = params.sample.temperature if args.temperature is None else args.temperature
    pr = Predictor.from_files(*(f"models/{m}/model.pt" for m in ("vqvae", "top_prior", "bottom_prior")))
    _, originals, manifest = load_samples("data/samples", "data/clips")
    g = torch.Generator().manual_seed(args.seed)
    decode = lambda top, bottom: output_to_uint8(pr.vqvae.decode_codes(top, bottom)).numpy()
    with torch.no_grad():
        x = clips_to_input(torch.as_tensor(originals), pr.device)             # (N, 3, 16, H, W)
        true_top, true_bottom = pr.vqvae.encode(x)
        cond_top, cond_bottom = pr.vqvae.encode_cond(x[:, :, :4])
        truth_top = torch.cat([cond_top, true_top[:, 1:]], 1)
        truth = torch.cat([cond_bottom, true_bottom[:, cond_bottom.shape[1]:]], 1)   # what the prior is given
        if args.one_slice is not None:
            draws = []
            for _ in range(args.draws):
                b = truth.clone()
                b[:, args.one_slice] = sample_bottom_slice_cached(pr.bottom_prior, truth_top, truth, args.one_slice,
                                                                  temperature, None, g)
                draws.append(decode(truth_top, b))
            print(f"temperature {temperature}, {args.draws} draws per clip, bottom slice {args.one_slice} drawn "
                  "given the true past")
            print(one_slice_table(params, manifest, originals, decode(truth_top, truth), draws, args.one_slice))
            return 0
        model, given_top, one_step = [], [], []
        for _ in range(args.draws):
            top = torch.cat([cond_top, sample_top_cached(pr.top_prior, cond_top, cond_bottom, temperature, None, g)], 1)
            model.append(decode(top, sample_bottom_cached(pr.bottom_prior, top, cond_bottom, temperature, None, g)))
            given_top.append(decode(truth_top, sample_bottom_cached(pr.bottom_prior, truth_top, cond_bottom,
                                                                    temperature, None, g)))
            b = truth.clone()
            for n in range(cond_bottom.shape[1], truth.shape[1]):
                b[:, n] = sample_bottom_slice_cached(pr.bottom_prior, truth_top, truth, n, temperature, None, g)
            one_step.append(decode(truth_top, b))
        repeated = torch.cat([cond_bottom, cond_bottom[:, -1:].expand(-1, true_bottom.shape[1] - cond_bottom.shape[1],
                                                                      -1, -1)], 1)
        systems = {"model": np.stack(model), "copy_last_frame": copy_last_frame(originals, 4).numpy(),
                   "true_top": np.stack(given_top), "one_step": np.stack(one_step),
                   "copied_bottom": decode(truth_top, repeated),
                   "reconstruction": decode(true_top, true_bottom)}
        common = torch.unique(true_top, return_counts=True)
        tops = {"own": true_top, "another clip's": true_top.roll(1, 0),
                "one code": torch.full_like(true_top, int(common[0][common[1].argmax()]))}
        top_use = {k: float(frame_psnr(decode(t, true_bottom), originals).mean()) for k, t in tops.items()}
        top_kept = float((true_top[:, 1:] == true_top[:, :-1]).float().mean())   # slice t+1 keeps t's code
    report = motion_metrics(synthetic_config(params.ingest), manifest.source, manifest.start_time, manifest.fps,
                            originals, systems, seed=args.seed)
    print(f"temperature {temperature}, {args.draws} draws per clip")
    print(summary(report))
    print("the decoder's use of the top level: reconstruction PSNR (dB) with top codes "
          + ", ".join(f"{k} {v:.2f}" for k, v in top_use.items()) + f"; a top code kept from slice to slice {top_kept:.0%}")
    return 0


def one_slice_table(params, manifest, originals, reconstruction, draws, n: int) -> str:
    """Objects found at the two frames of bottom slice n, reconstruction vs the draws, by group."""
    import numpy as np

    from vqvp_core.data.ingest import synthetic_config
    from vqvp_core.eval.motion import FOUND_AREA_RATIO, found_by_group, group_attributes, synthetic_scenes

    cfg = synthetic_config(params.ingest)
    scenes = synthetic_scenes(cfg, manifest.source, manifest.start_time, manifest.fps)
    frames = [2 * n, 2 * n + 1]
    present, rec, rec_ratio = found_by_group(originals, reconstruction, scenes, frames)
    by_draw = [found_by_group(originals, d, scenes, frames) for d in draws]
    drawn = np.stack([f for _, f, _ in by_draw])                                        # (S, N, 2, K)
    ratio = np.stack([r for _, _, r in by_draw])
    attrs = {k: np.broadcast_to(v[:, None], present.shape) for k, v in group_attributes(cfg, scenes).items()}
    rows = [("all", present)]
    rows += [(kind, present & (attrs["kind"] == kind)) for kind in ("digit", "shape")]
    rows += [(f"speed {lo}-{hi} px/frame", present & (attrs["speed"] >= lo) & (attrs["speed"] < hi))
             for lo, hi in ((0, 1.2), (1.2, 2.2), (2.2, 99))]
    rows += [(f"height {lo}-{hi} px", present & (attrs["height"] >= lo) & (attrs["height"] < hi))
             for lo, hi in ((0, 20), (20, 25), (25, 99))]
    lines = [f"frames {frames[0] + 1}-{frames[1] + 1}: objects found | groups x frames | reconstruction | one-slice draw"]
    for name, m in rows:
        if m.any():
            lines.append(f"  {name:22s} {int(m.sum()):5d}  {rec[m].mean():6.1%}  {drawn[:, m].mean():6.1%}")
    lo = FOUND_AREA_RATIO[0]
    lines.append(f"area of an object over the truth's: median {np.median(rec_ratio[present]):.2f} | "
                 f"{np.median(ratio[:, present]):.2f}; under {lo:g} of it {np.mean(rec_ratio[present] < lo):.1%} | "
                 f"{np.mean(ratio[:, present] < lo):.1%} (reconstruction | draw)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
