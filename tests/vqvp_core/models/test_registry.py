"""One save_model / load_model for every model kind: round trips, kinds, old files, bad files."""
from __future__ import annotations

import pytest
import torch

from tests.vqvp_core.sampling.test_cached import bottom_config, top_config
from vqvp_core.models.registry import (MODEL_FORMAT, ModelFileError, build_model, kind_of, load_model,
                                       read_model_file, save_model)
from vqvp_core.models.vqvae import VQVAEConfig

CONFIGS = {
    "vqvae": lambda: VQVAEConfig.tiny(first_channels=8, channels=8, res_channels=4, embed_dim=4, n_codes=16,
                                      frames=8, size=16).to_dict(),
    "top_prior": lambda: top_config().to_dict(),
    "bottom_prior": lambda: bottom_config().to_dict(),
}


@pytest.fixture(params=sorted(CONFIGS))
def saved(request, tmp_path):
    kind = request.param
    torch.manual_seed(0)
    model = build_model(kind, CONFIGS[kind]())
    path = save_model(tmp_path / "model.pt", model, step=7, data_source="synthetic")
    return kind, model, path


def test_round_trip_keeps_kind_config_weights_and_extra(saved):
    kind, model, path = saved
    assert kind_of(model) == kind
    obj = read_model_file(path)
    assert obj["format"] == MODEL_FORMAT and obj["kind"] == kind and obj["step"] == 7
    assert obj["config"] == model.config.to_dict()
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # atomic: no temp file left


def test_the_expected_kind_is_checked(saved):
    kind, _, path = saved
    other = next(k for k in CONFIGS if k != kind)
    assert type(load_model(path, kind)) is type(load_model(path))
    with pytest.raises(ModelFileError, match=f"holds a {kind} model, not a {other}"):
        load_model(path, other)


def test_files_from_before_kinds_load_when_the_kind_is_given(saved, tmp_path):
    kind, model, path = saved
    old = {k: v for k, v in read_model_file(path).items() if k not in ("kind", "format")}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ModelFileError, match="predates model kinds"):
        load_model(tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt", kind).config == model.config


@pytest.mark.parametrize("content, match", [
    (b"not a torch file", "not a vqvp model file"),
    ({"weights": {}}, "expected a dict with 'config' and 'state_dict'"),
    ({"format": MODEL_FORMAT + 1, "kind": "vqvae", "config": {}, "state_dict": {}}, "upgrade vqvp"),
    ({"kind": "gan", "config": {}, "state_dict": {}}, "unknown model kind 'gan'"),
    ({"kind": "vqvae", "config": {"no_such_key": 1}, "state_dict": {}}, "do not build a vqvae"),
])
def test_bad_files_fail_with_the_path_and_the_reason(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_a_missing_file_and_a_foreign_module():
    with pytest.raises(FileNotFoundError, match="written by a vqvp training stage"):
        load_model("/nonexistent/model.pt")
    with pytest.raises(TypeError, match="not a registered vqvp model"):
        kind_of(torch.nn.Linear(2, 2))
