"""Which prior loses the objects? Run in a workspace after `make demo` (or `vqvp stage sample`).

Decodes, for the sampled test clips (data/samples/manifest.parquet), and scores with the motion
metric (vqvp_core.eval.motion; synthetic sources only):

* ``model``: top and bottom codes both sampled (what `sample` does);
* ``true_top``: the top codes of the whole clip (encoded from the ground truth), the bottom sampled:
  if this finds the objects where ``model`` does not, the top prior loses them;
* ``copied_bottom``: the true top, and the last given bottom slice repeated (copy-last in code
  space, no prior at all): what the bottom prior must beat to add anything;
* ``reconstruction``: the clip's own codes decoded (the VQ-VAE's ceiling).

    python scripts/diagnose_priors.py --temperature 0.4 --draws 2
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
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path.cwd()))

    import numpy as np
    import torch

    from vqvp_core.config import load_params
    from vqvp_core.data.ingest import synthetic_config
    from vqvp_core.eval.motion import motion_metrics, summary
    from vqvp_core.metrics import copy_last_frame
    from vqvp_core.models.vqvae import clips_to_input, output_to_uint8
    from vqvp_core.sampling.cached import sample_bottom_cached, sample_top_cached
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
        model, given_top = [], []
        for _ in range(args.draws):
            top = torch.cat([cond_top, sample_top_cached(pr.top_prior, cond_top, cond_bottom, temperature, None, g)], 1)
            model.append(decode(top, sample_bottom_cached(pr.bottom_prior, top, cond_bottom, temperature, None, g)))
            given_top.append(decode(truth_top, sample_bottom_cached(pr.bottom_prior, truth_top, cond_bottom,
                                                                    temperature, None, g)))
        repeated = torch.cat([cond_bottom, cond_bottom[:, -1:].expand(-1, true_bottom.shape[1] - cond_bottom.shape[1],
                                                                      -1, -1)], 1)
        systems = {"model": np.stack(model), "copy_last_frame": copy_last_frame(originals, 4).numpy(),
                   "true_top": np.stack(given_top), "copied_bottom": decode(truth_top, repeated),
                   "reconstruction": decode(true_top, true_bottom)}
    report = motion_metrics(synthetic_config(params.ingest), manifest.source, manifest.start_time, manifest.fps,
                            originals, systems, seed=args.seed)
    print(f"temperature {temperature}, {args.draws} draws per clip")
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
