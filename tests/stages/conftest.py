"""Stage tests run in a temporary working directory on very small models (tiny shapes, few steps)."""
from pathlib import Path

import pytest

from tests.conftest import SMALL_MODEL, TINY_INGEST_ARGS

def args(*overrides: str) -> list[str]:
    return [a for o in SMALL_MODEL + list(overrides) for a in ("-S", o)] + TINY_INGEST_ARGS + ["--no-progress"]


def train_args(steps=4, section="vqvae", **extra) -> list[str]:
    over = [f"{section}.train.steps={steps}", f"{section}.train.batch_size=2", f"{section}.train.ckpt_every=2",
            f"{section}.train.val_every=2", f"{section}.train.log_every=1", f"{section}.train.precision=fp32"]
    over += ["vqvae.eval_clips=4", "vqvae.log_videos=2"] if section == "vqvae" else [f"{section}.eval_clips=4"]
    return args(*over, *[f"{section}.train.{k}={v}" for k, v in extra.items()])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with dvc.yaml and ingested clips (6 synthetic videos, 12 clips of 16x32x32)."""
    from stages import ingest

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_bytes((Path(__file__).parents[2] / "dvc.yaml").read_bytes())
    assert ingest.main(args()) == 0
    return tmp_path


@pytest.fixture
def latents_workdir(workdir):
    """workdir plus a (barely) trained small VQ-VAE and its latents."""
    from stages import extract_latents, train_vqvae

    assert train_vqvae.main(train_args(steps=2)) == 0
    assert extract_latents.main(args()) == 0
    return workdir


@pytest.fixture
def models_workdir(latents_workdir):
    from stages import train_bottom_prior, train_top_prior
    from tests.conftest import TINY_INGEST
    from vqvp_core.config import dump_params, load_params

    assert train_top_prior.main(train_args(steps=2, section="top_prior")) == 0
    assert train_bottom_prior.main(train_args(steps=2, section="bottom_prior")) == 0
    (latents_workdir / "params.yaml").write_text(dump_params(load_params(None, TINY_INGEST + SMALL_MODEL)))
    return latents_workdir
