import pytest
import yaml

from vqvp_core.config import (
    PRESETS_DIR, ConfigError, apply_overrides, dump_params, flatten, load_params, parse_override,
    preset_dict, preset_names, validate,
)

PRESETS = preset_names()


def test_presets_are_the_yaml_files():
    assert PRESETS == sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) and {"tiny", "tiny-long", "paper"} <= set(PRESETS)


def test_no_params_file_means_the_tiny_preset():
    assert load_params(None) == validate(preset_dict("tiny"))


def test_a_partial_params_file_takes_its_presets_other_values(tmp_path):
    """A key params.yaml leaves out is its preset's value, not a config class's default."""
    path = tmp_path / "params.yaml"
    path.write_text("preset: tiny-long\nvqvae:\n  model: {channels: 96}\n")
    params, long = load_params(path), validate(preset_dict("tiny-long"))
    assert params.vqvae.model.channels == 96
    assert params.vqvae.model.replace(channels=long.vqvae.model.channels) == long.vqvae.model
    assert params.bottom_prior == long.bottom_prior and params.sample == long.sample


def test_preset_based_on_another_and_cycles(tmp_path, monkeypatch):
    import vqvp_core.config as config

    (tmp_path / "a.yaml").write_text("based_on: tiny\nsample: {temperature: 0.9}\n")
    (tmp_path / "tiny.yaml").write_text((PRESETS_DIR / "tiny.yaml").read_text())
    (tmp_path / "b.yaml").write_text("based_on: c\n")
    (tmp_path / "c.yaml").write_text("based_on: b\n")
    monkeypatch.setattr(config, "PRESETS_DIR", tmp_path)
    a = validate(config.preset_values("a"))
    assert a.preset == "a" and a.sample.temperature == 0.9
    assert a.bottom_prior == validate(config.preset_values("tiny")).bottom_prior
    with pytest.raises(ConfigError, match="cycle: b -> c -> b"):
        config.preset_values("b")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_round_trip_through_yaml(name, tmp_path):
    params = validate(preset_dict(name))
    assert params.preset == name
    path = tmp_path / "params.yaml"
    path.write_text(dump_params(params))
    assert load_params(path) == params


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_in_auto_precision(name):
    """No preset hard-codes a precision: every training stage follows the hardware (bf16 where
    the device runs it natively, fp32 elsewhere; vqvp_core/train/precision.py)."""
    data = preset_dict(name)
    assert {s: data[s]["train"]["precision"] for s in ("vqvae", "top_prior", "bottom_prior")} == {
        "vqvae": "auto", "top_prior": "auto", "bottom_prior": "auto"}


def test_paper_preset_uses_paper_frame_size():
    params = validate(preset_dict("paper"))
    assert params.ingest.size == params.vqvae.model.size == 256
    assert params.vqvae.train.batch_size == 16  # the paper's VQ-VAE batch


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return {p for k in set(a) | set(b) for p in _diff(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))}
    return set() if a == b else {path}


def test_tiny_long_preset_is_tiny_plus_its_own_values_only():
    """Every value tiny-long does not name is tiny's (a partial `train` section must not fall
    back to TrainConfig's defaults: lr, warmup, batch sizes); the networks it names are the ones its
    README figures were measured with, not the demo's recipe."""
    from vqvp_core.config import flatten
    from vqvp_core.models.bottom_prior import BottomPriorConfig

    tiny, long = preset_dict("tiny"), preset_dict("tiny-long")
    named = {"preset"} | set(flatten(yaml.safe_load((PRESETS_DIR / "tiny-long.yaml").read_text()))) | {f"bottom_prior.model.{k}" for k in BottomPriorConfig.tiny().to_dict()}
    assert _diff(tiny, long) and _diff(tiny, long) <= named
    assert long["bottom_prior"]["model"] == BottomPriorConfig.tiny().to_dict()
    assert (long["vqvae"]["model"]["channels"], long["vqvae"]["train"]["steps"]) == (128, 900)
    assert long["top_prior"]["train"]["lr"] == tiny["top_prior"]["train"]["lr"]


def test_paper_preset_takes_no_tiny_recipe_values():
    from vqvp_core.models.vqvae import VQVAEConfig

    paper = preset_dict("paper")
    want = VQVAEConfig.paper().to_dict()
    assert (paper["ingest"]["size"], paper["ingest"]["clip_len"]) == (want.pop("size"), want.pop("frames"))
    assert paper["vqvae"]["model"] == want  # size and frames are ingest's (not repeated)
    from vqvp_core.models.bottom_prior import BottomPriorConfig
    from vqvp_core.models.top_prior import TopPriorConfig

    assert paper["top_prior"]["model"] == TopPriorConfig.paper().to_dict()
    assert paper["bottom_prior"]["model"] == BottomPriorConfig.paper().to_dict()


def test_cli_offers_every_preset():
    from flows.cli import PRESET_NAMES

    assert sorted(PRESET_NAMES) == sorted(PRESETS)


def test_model_and_train_sections_are_the_library_configs():
    from vqvp_core.models.vqvae import VQVAEConfig
    from vqvp_core.train.config import TrainConfig

    params = load_params("/nonexistent.yaml", ["vqvae.model.channels=48"])
    assert isinstance(params.vqvae.model, VQVAEConfig) and isinstance(params.vqvae.train, TrainConfig)
    assert params.vqvae.model.channels == 48 and params.vqvae.model.n_codes == 512
    assert params.vqvae.train.seed == 0  # TrainConfig's default (the tiny preset does not set it)


@pytest.mark.parametrize("text, path, value", [
    ("ingest.size=128", ["ingest", "size"], 128),
    ("ingest.fps=12.5", ["ingest", "fps"], 12.5),
    ("ingest.source=s3://bucket/videos", ["ingest", "source"], "s3://bucket/videos"),
    ("ingest.synthetic.objects=[2, 4]", ["ingest", "synthetic", "objects"], [2, 4]),
    ("ingest.max_clips_per_video=null", ["ingest", "max_clips_per_video"], None),
    ("ingest.synthetic.bounce=false", ["ingest", "synthetic", "bounce"], False),
    ("evaluate.i3d.sha256=" + "0" * 64, ["evaluate", "i3d", "sha256"], "0" * 64),  # digits stay text
])
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


def test_overrides_apply_over_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(dump_params(load_params(None)))
    params = load_params(path, ["ingest.size=128", "ingest.split.seed=7"])
    assert params.vqvae.model.size == 128  # is ingest.size (params.yaml does not repeat it)
    assert "size" not in yaml.safe_load(path.read_text())["vqvae"]["model"]
    agreeing = load_params(path, ["ingest.size=128", "vqvae.model.size=128"])  # given twice: must agree
    assert agreeing.vqvae.model.size == 128
    assert params.ingest.size == 128 and params.ingest.split.seed == 7
    assert params.ingest.fps == load_params(None).ingest.fps  # untouched values stay


def test_missing_file_means_the_tiny_preset(tmp_path):
    assert load_params(tmp_path / "nope.yaml") == load_params(None)


@pytest.mark.parametrize("override, key, expected", [
    ("ingest.size=13", "ingest.size = 13", "multiple of 8"),
    ("ingest.fps=-2", "ingest.fps = -2", "greater than 0"),
    ("ingest.fsp=3", "ingest.fsp", "unknown key"),
    ("ingest.stride=abc", "ingest.stride = 'abc'", "integer"),
    ("preset=huge", "preset = 'huge'", "expected one of ['paper', 'tiny', 'tiny-long']"),
    ("ingest.split.train=0.5", "ingest.split", "sum to 1"),
    ("ingest.synthetic.objects=[3, 1]", "ingest.synthetic", "objects = [3, 1]: expected 1 <= min <= max <= 8"),
    ("ingest.synthetic.speed=[1, 40]", "ingest: synthetic: speed = (1.0, 40.0)", "max <= size / 2 = 32"),
    ("ingest.extensions=[mp4]", "ingest.extensions", "must start with '.'"),
    ("vqvae.model.channels=-1", "vqvae.model", "VQVAEConfig.channels = -1: Input should be greater than or equal to 1"),
    ("vqvae.model.restart_sampling=worst", "vqvae.model",
     "VQVAEConfig.restart_sampling = 'worst': Input should be 'uniform' or 'error'"),
    ("vqvae.model.chanels=8", "vqvae.model", "unknown VQVAEConfig key 'chanels'"),
    ("vqvae.train.lr=0", "vqvae.train", "TrainConfig.lr = 0"),
    ("vqvae.train.schedule=step", "vqvae.train", "TrainConfig.schedule"),
    ("extract_latents.cond_frames=16", "extract_latents.cond_frames = 16", "exactly 4 given frames"),
    ("extract_latents.cond_frames=3", "extract_latents.cond_frames = 3", "exactly 4 given frames"),
    ("vqvae.model.size=32", "vqvae.model.size = 32 contradicts ingest.size = 64", "set ingest.size only"),
    ("vqvae.model.frames=8", "vqvae.model.frames = 8 contradicts ingest.clip_len = 16", "set ingest.clip_len only"),
    ("ingest.clip_len=4", "ingest.clip_len = 4", "must be > the 4 given frames"),
])
def test_bad_values_name_key_value_and_expectation(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_params("/nonexistent/params.yaml", [override])
    message = str(info.value)
    assert key in message and expected in message


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides({}, ["ingest.size=13", "ingest.fps=0"]))
    assert "ingest.size" in str(info.value) and "ingest.fps" in str(info.value)


@pytest.mark.parametrize("bad", ["noequals", "=3", "ingest.size.x=3"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError):
        load_params("/nonexistent.yaml", [bad])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset = 'huge'"):
        preset_dict("huge")


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(path)


def test_flatten_for_mlflow():
    flat = flatten(load_params(None).model_dump(mode="json"))
    assert flat["ingest.size"] == 64 and flat["ingest.split.train"] == 0.8
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())


def test_repo_params_file_is_valid_and_matches_tiny():
    with open("params.yaml") as fh:
        data = yaml.safe_load(fh)
    assert validate(data) == validate(preset_dict("tiny"))


def test_a_bad_frame_size_is_reported_once():
    """ingest.size is also the VQ-VAE's: a bad one is one error, named by its own key."""
    with pytest.raises(ConfigError) as info:
        load_params(None, ["ingest.size=13"])
    assert str(info.value).count("= 13") == 1 and "ingest.size = 13" in str(info.value)


def test_the_committed_params_yaml_is_the_tiny_preset():
    """The repository's params.yaml is what `make demo` writes (`vqvp run --preset tiny`): a new or
    changed key in the schema or a preset shows up here, not as a diff after the first run."""
    from pathlib import Path

    committed = (Path(__file__).resolve().parents[2] / "params.yaml").read_text()
    assert committed == dump_params(validate(preset_dict("tiny")))
