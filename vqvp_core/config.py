"""The params schema: one typed, validated model per `params.yaml` section.

The same schema serves the stage CLIs (`vqvp stage NAME -S key=value`), the Prefect flow
parameters (`vqvp run --preset tiny -S ...`) and the MLflow params (flattened dotted keys).
A bad value fails here, before any work starts, with the key, the value and what was expected.

Each section's model and training configs are the library's own classes (a model's config lives
in its model file). Presets are data, one YAML file each in `vqvp_core/presets/` (`tiny`: the
embedded CPU default, 64x64 frames; `tiny-long`: based on tiny, longer; `paper`: the paper's
256x256 configuration), each a partial params file over the schema's defaults or over the preset
it is `based_on`. `params.yaml` always holds the full, explicit values that DVC tracks;
`vqvp run --preset NAME` rewrites it from the preset.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vqvp_core import presets
from vqvp_core.clip import GIVEN_FRAMES
from vqvp_core.configbase import CoreConfig
from vqvp_core.data.synthetic import SyntheticConfig, SyntheticSource
from vqvp_core.models.bottom_prior import BottomPriorConfig
from vqvp_core.models.top_prior import TopPriorConfig
from vqvp_core.models.vqvae import VQVAEConfig
from vqvp_core.train.config import TrainConfig


PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A params value is missing, unknown or out of range. The message names key and value."""


class _Section(BaseModel):
    # extra='forbid': a misspelt key is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class SplitParams(_Section):
    """Deterministic split by source video: a hash of (seed, video id) picks the split, so
    no video has clips in two splits and adding videos never moves existing ones."""

    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class IngestParams(_Section):
    """Raw videos -> uint8 clips (N, clip_len, size, size, 3) in `data/clips/`."""

    source: str = Field(
        "synthetic",
        description="'synthetic', a folder of videos (local or s3://...), or a Kinetics-style "
        "annotation CSV (label,youtube_id,time_start,time_end,split)",
    )
    video_root: str | None = Field(
        None, description="for a CSV source: where its videos live (default: the CSV's folder)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options, e.g. {client_kwargs: {endpoint_url: ...}}"
    )
    extensions: list[str] = Field(
        default_factory=lambda: [".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"]
    )
    size: int = Field(64, ge=8, description="frames are resized (short side) and center-cropped to size x size")
    clip_len: int = Field(16, ge=1, description="frames per clip: 4 given + 12 predicted")
    fps: float = Field(8.0, gt=0, description="target frame rate every video is resampled to")
    stride: int = Field(16, ge=1, description="frames between the starts of consecutive windows")
    max_clips_per_video: int | None = Field(
        None, ge=1, description="cap on windows per video; keeps long videos from dominating"
    )
    shard_size: int = Field(256, ge=1, description="clips per shard file (bounds the writer's memory)")
    workers: int = Field(0, ge=0, description="decoding processes; 0 = all cores")
    split: SplitParams = Field(default_factory=SplitParams)
    synthetic: SyntheticSource = Field(default_factory=SyntheticSource)  # vqvp_core/data/synthetic.py

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v % 8:
            raise ValueError("expected a multiple of 8 (the VQ-VAE downsamples space by 8)")
        return v

    @field_validator("extensions")
    @classmethod
    def _extensions(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not e.startswith(".")]
        if bad:
            raise ValueError(f"each extension must start with '.', got {bad}")
        return v

    @model_validator(mode="after")
    def _synthetic_fits(self) -> "IngestParams":
        try:  # the synthetic section at this frame size (speed <= size / 2)
            SyntheticConfig.at(self.synthetic, self.size, self.fps)
        except ValueError as exc:
            raise ValueError(f"synthetic: {exc}".replace("SyntheticConfig: ", "")) from None
        return self


M = TypeVar("M", bound=CoreConfig)


class TrainingStageParams(_Section, Generic[M]):
    """What every training stage's section holds: its model's config (the class the model file
    owns), the one training loop's TrainConfig, the final evaluation's size and the MLflow
    registered model it becomes. Unset fields take the preset's values (vqvp_core/presets/)."""

    model: M
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval_clips: int = Field(16, ge=1, description="clips per split for the final evaluation")
    register_as: str = Field(min_length=1, description="MLflow registered model name")
    alias: str = Field("candidate", min_length=1, description="alias set on the new model version")


class VQVAEParams(TrainingStageParams[VQVAEConfig]):
    """train_vqvae: the model (vqvp_core/models/vqvae.py) and its training; README, 'train_vqvae'."""

    model: VQVAEConfig = Field(default_factory=VQVAEConfig)
    eval_clips: int = Field(64, ge=1, description="held-out (val) clips for the final PSNR / codes-in-use")
    register_as: str = Field("vqvp-vqvae", min_length=1, description="MLflow registered model name")
    log_videos: int = Field(4, ge=0, description="original | reconstruction examples logged to MLflow")
    # After training, each level's codebook can be merged into k clusters (EMAQuantizer.merge): a
    # trained codebook spends many codes on near-identical vectors (the demo: 278 codes on black
    # cells), so a static cell's code flickers from slice to slice and the priors learn that noise.
    merge_top_codes: int = Field(0, ge=0, description="merge the top codebook into this many codes after training (0: off)")
    merge_bottom_codes: int = Field(0, ge=0, description="merge the bottom codebook into this many codes after training (0: off)")

    @model_validator(mode="after")
    def _merge_within_codebook(self):
        for name in ("merge_top_codes", "merge_bottom_codes"):
            if getattr(self, name) > self.model.n_codes:
                raise ValueError(f"vqvae.{name} = {getattr(self, name)} is more than the codebook's "
                                 f"vqvae.model.n_codes = {self.model.n_codes}")
        return self


class LatentsParams(_Section):
    """extract_latents: encode every clip (and its 4 conditioning frames alone) to code grids."""

    batch_size: int = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cond_frames: int = Field(4, ge=1, description="given frames; the paper conditions on 4 and predicts 12")


class TopPriorParams(TrainingStageParams[TopPriorConfig]):
    """train_top_prior: the 3D PixelCNN over the top codes of the 3 predicted steps."""

    model: TopPriorConfig = Field(default_factory=TopPriorConfig)
    register_as: str = Field("vqvp-top-prior", min_length=1, description="MLflow registered model name")


class BottomPriorParams(TrainingStageParams[BottomPriorConfig]):
    """train_bottom_prior: the 2D PixelCNN over one bottom slice, with its 3D conditioning stack."""

    model: BottomPriorConfig = Field(default_factory=BottomPriorConfig)
    register_as: str = Field("vqvp-bottom-prior", min_length=1, description="MLflow registered model name")


class SampleParams(_Section):
    """sample: predictions for test clips (4 given frames -> 16 frames)."""

    count: int = Field(128, ge=1, description="test clips to predict (fewer if the split is smaller); "
                       "the demo's 111 test clips resolve differences of a few tenths of a dB")
    temperature: float = Field(1.0, ge=0, description="the paper's samples use 1.0 and 1.2; 0 = greedy "
                               "(the tiny preset: 0.4)")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely codes; null = all")
    seed: int = Field(0, ge=0)
    samples_per_clip: int = Field(4, ge=1, description=(
        "draws per clip for the PSNR statistics (one, best of, pixel mean); predictions.npy keeps the first"))
    # the cached sampler's per-code cost is mostly fixed overhead at tiny widths: one large batch of
    # every draw of every clip amortises it (sample stage)
    batch_size: int = Field(512, ge=1, description="rows (clip x draw) sampled together")
    cached: bool = Field(True, description="cached (fast) sampling; false runs the naive reference sampler")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    videos: int = Field(8, ge=0, description="side-by-side videos (given | predicted | ground truth) written")
    register_as: str = Field("vqvp-predictor", min_length=1, description=(
        "MLflow registered model of the video predictor (the three models as one pyfunc; README, 'MLflow')"))
    register_video_as: str = Field("vqvp-video-predictor", min_length=1, description=(
        "MLflow registered model of the same predictor taking video paths or URLs"))
    alias: str = Field("candidate", min_length=1, description="alias set on the new predictors' versions")


class I3DParams(_Section):
    """The Kinetics-400 I3D weights FVD needs. No package ships them and nothing is downloaded:
    give a path or URL (local, s3://, https://) and its sha256. Without them FVD is reported as
    unavailable, never computed with an untrained network."""

    path: str | None = Field(None, description="i3d_pretrained_400.pt (VideoGPT/TATS) or i3d_torchscript.pt (StyleGAN-V)")
    sha256: str | None = Field(None, description="the file's sha256; required with path")
    format: Literal["auto", "state_dict", "torchscript"] = "auto"
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sha_with_path(self) -> "I3DParams":
        if self.path and not self.sha256:
            raise ValueError("sha256 is required when path is set (the weights are checked before use)")
        return self


class EvaluateParams(_Section):
    """evaluate: FVD / FVD* (given I3D weights), PSNR / SSIM vs the copy-last-frame baseline, bits per code."""

    i3d: I3DParams = Field(default_factory=I3DParams)
    folds: int = Field(2, ge=1, description="FVD k-fold cross-validation (the paper: 2)")
    seed: int = Field(0, ge=0, description="seed of the fold split")
    resolutions: list[int | Literal["full"]] = Field(
        default_factory=lambda: [64, "full"], description="64 = the downscaled protocol others report")
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class HumanEvalParams(_Section):
    """package_human_eval: a blinded side-by-side rating study (the paper's Table 1)."""

    pairs: int = Field(16, ge=1, description="pairs (test clips) in the study")
    baseline: str = Field("copy-last-frame", description="'copy-last-frame', or a folder of another sample run "
                          "(with predictions.npy and manifest.parquet) to compare against")
    baseline_name: str | None = Field(None, description="name shown in the results (default: the baseline)")
    min_judgments: int = Field(13, ge=1, description="judgments per pair the server aims for (the paper: 13)")
    size: int = Field(64, ge=8, description="videos are shown at 64x64, as in the paper")
    seed: int = Field(0, ge=0, description="randomizes the sides")


class FlowParams(_Section):
    """The Prefect flow around the stages (not a stage's input: changing it reruns nothing)."""

    # A stage task still running after this long is stopped (its process group SIGTERMed, then
    # SIGKILLed) and fails the run without a retry: a retry would only hit the same limit. 6 h covers every tiny stage
    # on a slow CPU many times over; the paper preset's 1M-step trainings get 14 days.
    stage_timeout_s: int = Field(21_600, ge=1, description="default timeout of every stage task, seconds")
    timeout_s: dict[str, int] = Field(default_factory=dict, description="per-stage timeouts, seconds (override the default)")

    @field_validator("timeout_s")
    @classmethod
    def _known_stages(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            return v
        from vqvp_core.dag import stages  # dvc.yaml: the one list of stages

        known = stages()
        for stage, seconds in v.items():
            if stage not in known:
                raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(known)}")
            if not isinstance(seconds, int) or seconds < 1:
                raise ValueError(f"{stage} = {seconds!r}: expected whole seconds >= 1")
        return v

    def timeout(self, stage: str) -> int:
        return self.timeout_s.get(stage, self.stage_timeout_s)


class Params(_Section):
    """The whole `params.yaml`. Each stage reads its own section (and `preset`)."""

    preset: str = Field("tiny", description="the preset (vqvp_core/presets/NAME.yaml) unset values come from")
    ingest: IngestParams = Field(default_factory=IngestParams)
    vqvae: VQVAEParams = Field(default_factory=VQVAEParams)
    extract_latents: LatentsParams = Field(default_factory=LatentsParams)
    top_prior: TopPriorParams = Field(default_factory=TopPriorParams)
    bottom_prior: BottomPriorParams = Field(default_factory=BottomPriorParams)
    sample: SampleParams = Field(default_factory=SampleParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    human_eval: HumanEvalParams = Field(default_factory=HumanEvalParams)
    flow: FlowParams = Field(default_factory=FlowParams)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in preset_names():
            raise ValueError(f"expected one of {preset_names()} (files in vqvp_core/presets/)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _derived_agree(cls, data: Any) -> Any:
        """The VQ-VAE is built for the clips ingest makes: vqvae.model.size / frames are ingest.size /
        clip_len, one value each (set them in ingest; params.yaml does not repeat them). Given in
        vqvae.model as well, they must agree: a contradiction is an error naming both keys."""
        if not isinstance(data, dict):
            return data
        ingest = data.get("ingest") if isinstance(data.get("ingest"), dict) else {}
        vqvae = data.get("vqvae", {})
        if not isinstance(vqvae, dict) or not isinstance(vqvae.get("model", {}), dict):
            return data
        model = dict(vqvae.get("model", {}))
        for key, other in (("size", "size"), ("frames", "clip_len")):
            want = ingest.get(other, IngestParams.model_fields[other].default)
            if key in model and model[key] != want:
                raise ValueError(f"vqvae.model.{key} = {model[key]!r} contradicts ingest.{other} = {want!r}: "
                                 f"the VQ-VAE is built for the clips ingest makes; set ingest.{other} only")
            if key == "size" and not (isinstance(want, int) and want % 8 == 0):
                continue  # ingest.size's own check names the mistake, once
            model[key] = want
        return {**data, "vqvae": {**vqvae, "model": model}}

    @model_validator(mode="after")
    def _sections_agree(self) -> "Params":
        model, top, bottom = self.vqvae.model, self.top_prior.model, self.bottom_prior.model
        if self.ingest.clip_len <= GIVEN_FRAMES:
            raise ValueError(f"ingest.clip_len = {self.ingest.clip_len} must be > the {GIVEN_FRAMES} given frames")
        for key, value, want in (("top_prior.model.n_codes", top.n_codes, model.n_codes),
                                 ("top_prior.model.n_codes_bottom", top.n_codes_bottom, model.n_codes),
                                 ("bottom_prior.model.n_codes", bottom.n_codes, model.n_codes),
                                 ("bottom_prior.model.n_codes_top", bottom.n_codes_top, model.n_codes),
                                 ("top_prior.model.pred_steps", top.pred_steps, (model.frames - GIVEN_FRAMES) // 4),
                                 ("bottom_prior.model.n_steps", bottom.n_steps, model.frames // 2),
                                 ("bottom_prior.model.n_given", bottom.n_given, 2)):
            if value != want:
                raise ValueError(f"{key} = {value} must be {want} to match vqvae.model "
                                 f"(n_codes {model.n_codes}, frames {model.frames}, {GIVEN_FRAMES} given frames)")
        if self.extract_latents.cond_frames != GIVEN_FRAMES:  # the VQ-VAE's encode_cond takes exactly these
            raise ValueError(f"extract_latents.cond_frames = {self.extract_latents.cond_frames}: the model conditions "
                             f"on exactly {GIVEN_FRAMES} given frames (vqvp_core/clip.py), as the paper does")
        return self


PRESETS_DIR = presets.DIR


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: `update`'s values over `base`'s, recursing into nested dicts."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_names() -> list[str]:
    """The presets: one YAML file each in PRESETS_DIR (vqvp_core/presets/)."""
    return presets.names(PRESETS_DIR)


def _preset_file(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise ConfigError(f"preset = {name!r}: expected one of {preset_names()} (files in {PRESETS_DIR})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def preset_values(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's own values over those of the preset it is `based_on` (if any); every value it
    does not give is the schema's default (the library's config classes' for models and training)."""
    if name in _seen:
        raise ConfigError(f"presets based on each other in a cycle: {' -> '.join(_seen + (name,))}")
    data = _preset_file(name)
    base = data.pop("based_on", None)
    data = {**data, "preset": name}
    return deep_merge(preset_values(base, _seen + (name,)), data) if base else data


def preset_dict(name: str) -> dict[str, Any]:
    """A preset's full, validated params (what `vqvp run --preset NAME` writes to params.yaml)."""
    return without_derived(validate(preset_values(name)).model_dump(mode="json"))


def without_derived(data: dict) -> dict:
    """The params as written to params.yaml: without vqvae.model.size / frames, which are
    ingest.size / clip_len (Params._derived_agree)."""
    for key in ("size", "frames"):
        data.get("vqvae", {}).get("model", {}).pop(key, None)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], value); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    if isinstance(value, int) and not isinstance(value, bool) and str(value) != raw.strip():
        value = raw.strip()  # '000123...' (a digest) stays text; an int field still parses it
    return path, value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    out = copy.deepcopy(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "params"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {value!r}); check the spelling against params.yaml")
        elif err["type"] == "missing":
            lines.append(f"  {key}: missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(value, dict):
                lines.append(f"  {key}: {msg}")
            else:
                lines.append(f"  {key} = {value!r}: {msg}")
    return "invalid params:\n" + "\n".join(lines)


def validate(data: dict) -> Params:
    """Validate params; a key the data leaves out takes the value of its preset (`preset`, default
    tiny), so a partial params.yaml means its preset plus the values it gives."""
    name = data.get("preset", "tiny") if isinstance(data, dict) else "tiny"
    if isinstance(data, dict) and isinstance(name, str) and name in preset_names():
        data = deep_merge(preset_values(name), data)
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_params(path: str | Path | None = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Read params.yaml (None or a missing file means the defaults), apply -S overrides, validate."""
    data: dict = {}
    path = Path(path) if path is not None else None
    if path is not None and path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return validate(apply_overrides(data, overrides))


def dump_params(params: Params) -> str:
    header = "# vqvp params: one section per stage (see README, 'Params'). Generated from preset " \
        f"'{params.preset}'; edit freely.\n"
    return header + yaml.safe_dump(without_derived(params.model_dump(mode="json")), sort_keys=False)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: how params are logged to MLflow."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
