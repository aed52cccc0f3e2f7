"""The params schema: one typed, validated model per `params.yaml` section.

The same schema serves the stage CLIs (`vqvp stage NAME -S key=value`), the Prefect flow
parameters (`vqvp run --preset tiny -S ...`) and the MLflow params (flattened dotted keys).
A bad value fails here, before any work starts, with the key, the value and what was expected.

Presets are partial dicts applied over the schema defaults: `tiny` (the embedded CPU default,
64x64 frames) and `paper` (the paper's 256x256 configuration). `params.yaml` always holds the
full, explicit values that DVC tracks; `vqvp run --preset NAME` rewrites it from the preset.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A params value is missing, unknown or out of range. The message names key and value."""


class _Section(BaseModel):
    # extra='forbid': a misspelt key is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class SyntheticParams(_Section):
    """The embedded default source: moving digits and shapes (vqvp_core.data.synthetic).
    Frame size and fps come from the ingest section."""

    # 400 videos -> 1,200 clips (963 / 126 / 111 train / val / test): rendering is seconds, and the
    # priors of the 30 TFLOP demo see each training clip about once, so they learn instead of
    # overfitting (on 96 videos they overfit within ~300 steps); 111 test clips resolve the metrics.
    n_videos: int = Field(400, ge=1, description="number of synthetic videos")
    n_frames: int = Field(48, ge=1, description="frames per video; 48 gives 3 windows of 16")
    objects: tuple[int, int] = Field((1, 3), description="objects per video, inclusive range")
    kinds: Literal["digits", "shapes", "both"] = "both"
    speed: tuple[float, float] = Field((0.5, 3.0), description="px/frame range (at 64x64)")
    scale: tuple[float, float] = Field((0.25, 0.45), description="object height / frame size range")
    background: Literal["black", "noise", "gradient"] = "black"
    occlusions: bool = True
    bounce: bool = True
    static_fraction: float = Field(0.1, ge=0, le=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> "SyntheticParams":
        for name in ("objects", "speed", "scale"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min {lo} must be <= max {hi}")
        return self


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
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)

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


def _dataclass_dict(factory: str) -> Callable[[dict], dict]:
    """A validator for a dict that builds a core dataclass (`module:Class`): it builds it (the
    dataclass checks its own values, naming the field) and returns the full, normalised dict.
    Missing keys take the dataclass defaults; unknown keys are errors."""

    def check(value: dict) -> dict:
        module, name = factory.split(":")
        cls = getattr(importlib.import_module(module), name)
        return cls.from_dict(dict(value)).to_dict()

    return check


TopPriorModelDict = Annotated[dict[str, Any], AfterValidator(_dataclass_dict("vqvp_core.models.top_prior:TopPriorConfig"))]
BottomPriorModelDict = Annotated[dict[str, Any], AfterValidator(_dataclass_dict("vqvp_core.models.bottom_prior:BottomPriorConfig"))]
VQVAEModelDict = Annotated[dict[str, Any], AfterValidator(_dataclass_dict("vqvp_core.models.vqvae:VQVAEConfig"))]
TrainDict = Annotated[dict[str, Any], AfterValidator(_dataclass_dict("vqvp_core.train.config:TrainConfig"))]


# The `tiny` recipe (make demo), sized in FLOPs for a 2-core AVX2 CPU (30 TFLOP of training in all,
# most of it for the bottom prior; bench/budget.py). Each value's measured reason: README, 'The demo's
# recipe'. A VQ-VAE a seventh of VQ-VAE-2's widths with one residual block per stack (2.2 GFLOP per
# clip and step instead of 37): at a fixed budget it reconstructs better than wider ones trained for
# fewer steps; causal encoders (the given frames' codes are the clip's own first codes) and bottom
# codes from the bottom features alone (no top-code noise in what the bottom prior predicts).
TINY_VQVAE = dict(first_channels=16, channels=32, res_channels=16, n_res_blocks=1, embed_dim=16,
                  causal_encoder=True, bottom_sees_top=False)
TINY_VQVAE_TRAIN = dict(steps=600, batch_size=4, lr=4e-3, warmup_steps=20, precision="auto", ckpt_every=200,
                        val_every=600, log_every=10, max_val_batches=4)


class TrainingStageParams(_Section):
    """What every training stage's section holds (one schema; each stage's class below only gives
    its model's config type and its defaults): the model's config, the shared loop's TrainConfig,
    the final evaluation's size, and the MLflow registered model it becomes."""

    model: dict[str, Any]
    train: TrainDict
    eval_clips: int = Field(16, ge=1, description="clips per split for the final evaluation")
    register_as: str = Field(min_length=1, description="MLflow registered model name")
    alias: str = Field("candidate", min_length=1, description="alias set on the new model version")


class VQVAEParams(TrainingStageParams):
    """train_vqvae: the model (vqvp_core.models.vqvae.VQVAEConfig) and its training
    (vqvp_core.train.config.TrainConfig); see README, 'train_vqvae'."""

    model: VQVAEModelDict = Field(default_factory=lambda: dict(TINY_VQVAE))
    # precision auto (vqvp_core/train/precision.py): bf16 autocast where the device runs it
    # natively (CUDA; a CPU with AMX or AVX512-BF16), fp32 elsewhere (an AVX2 CPU would emulate
    # bf16, 50x+ slower). The tiny budget: 600 steps of 4 clips, 4.9 TFLOP (bench/budget.py); at
    # this budget more, smaller steps beat fewer large ones (README, 'The demo's recipe')
    train: TrainDict = Field(default_factory=lambda: dict(TINY_VQVAE_TRAIN))
    eval_clips: int = Field(64, ge=1, description="held-out (val) clips for the final PSNR / codes-in-use")
    register_as: str = Field("vqvp-vqvae", min_length=1, description="MLflow registered model name")
    log_videos: int = Field(4, ge=0, description="original | reconstruction examples logged to MLflow")


class LatentsParams(_Section):
    """extract_latents: encode every clip (and its 4 conditioning frames alone) to code grids."""

    batch_size: int = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cond_frames: int = Field(4, ge=1, description="given frames; the paper conditions on 4 and predicts 12")


def _tiny_prior(module: str, name: str, **recipe: Any) -> Callable[[], dict]:
    return lambda: {**getattr(importlib.import_module(module), name).tiny().to_dict(), **recipe}


# The tiny recipe's bottom prior: a third of BottomPriorConfig.tiny()'s FLOPs per clip (5.2 vs 16.0
# GFLOP, 0.6 M parameters), trained three times as many steps: at one budget it reaches lower
# held-out bits (2.34 vs 2.65; README, 'The demo's recipe'). Attention every 3 of 6 layers.
TINY_BOTTOM_PRIOR = dict(channels=32, n_layers=6, attn_every=3, attn_channels=32, out_hidden=64, embed_dim=16,
                         cond_channels=48, cond_res_hidden=24)


class TopPriorParams(TrainingStageParams):
    """train_top_prior: the 3D PixelCNN over the top codes of the 3 predicted steps."""

    model: TopPriorModelDict = Field(default_factory=_tiny_prior("vqvp_core.models.top_prior", "TopPriorConfig"))
    train: TrainDict = Field(default_factory=lambda: dict(
        steps=30, batch_size=8, lr=1e-3, warmup_steps=10, ckpt_every=30, val_every=30, log_every=10,
        max_val_batches=2))  # the tiny demo's budget: 0.7 TFLOP; with causal encoders the top codes carry
    # almost nothing the given frames do not fix (held-out 0.16 bits per code after 30 steps)
    register_as: str = Field("vqvp-top-prior", min_length=1, description="MLflow registered model name")


class BottomPriorParams(TrainingStageParams):
    """train_bottom_prior: the 2D PixelCNN over one bottom slice, with its 3D conditioning stack."""

    model: BottomPriorModelDict = Field(
        default_factory=_tiny_prior("vqvp_core.models.bottom_prior", "BottomPriorConfig", **TINY_BOTTOM_PRIOR))
    train: TrainDict = Field(default_factory=lambda: dict(
        steps=300, batch_size=4, lr=2e-3, warmup_steps=10, ckpt_every=100, val_every=300, log_every=10,
        max_val_batches=2))  # the tiny demo's budget: 6.2 TFLOP (bench/budget.py)
    register_as: str = Field("vqvp-bottom-prior", min_length=1, description="MLflow registered model name")


class SampleParams(_Section):
    """sample: predictions for test clips (4 given frames -> 16 frames)."""

    count: int = Field(128, ge=1, description="test clips to predict (fewer if the split is smaller); "
                       "the demo's 111 test clips resolve differences of a few tenths of a dB")
    # tiny: 0.4. The demo's undertrained bottom prior draws coherent blobs at a low temperature and
    # noise at 1.0 (111 test clips, 2 draws: one draw 12.88 dB at 0.4, 12.84 at 0.7, 12.62 at 1.0;
    # README, 'The demo's recipe'); the paper and tiny-long presets keep the paper's 1.0
    temperature: float = Field(0.4, ge=0, description="the paper's samples use 1.0 and 1.2; 0 = greedy")
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

    preset: Literal["tiny", "tiny-long", "paper"] = "tiny"
    ingest: IngestParams = Field(default_factory=IngestParams)
    vqvae: VQVAEParams = Field(default_factory=VQVAEParams)
    extract_latents: LatentsParams = Field(default_factory=LatentsParams)
    top_prior: TopPriorParams = Field(default_factory=TopPriorParams)
    bottom_prior: BottomPriorParams = Field(default_factory=BottomPriorParams)
    sample: SampleParams = Field(default_factory=SampleParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    human_eval: HumanEvalParams = Field(default_factory=HumanEvalParams)
    flow: FlowParams = Field(default_factory=FlowParams)

    @model_validator(mode="before")
    @classmethod
    def _derived_agree(cls, data: Any) -> Any:
        """The VQ-VAE is built for the clips ingest makes: vqvae.model.size / frames are ingest.size /
        clip_len, one value each (set them in ingest; params.yaml does not repeat them). Given in
        vqvae.model as well, they must agree: a contradiction is an error naming both keys (before,
        vqvae.model's were silently replaced by ingest's)."""
        if not isinstance(data, dict) or not isinstance(data.get("vqvae"), dict) \
                or not isinstance(data["vqvae"].get("model"), dict):
            return data
        ingest = data.get("ingest") if isinstance(data.get("ingest"), dict) else {}
        model = dict(data["vqvae"]["model"])
        for key, other in (("size", "size"), ("frames", "clip_len")):
            if key in model:
                want = ingest.get(other, IngestParams.model_fields[other].default)
                if model[key] != want:
                    raise ValueError(f"vqvae.model.{key} = {model[key]!r} contradicts ingest.{other} = {want!r}: "
                                     f"the VQ-VAE is built for the clips ingest makes; set ingest.{other} only")
                del model[key]
        return {**data, "vqvae": {**data["vqvae"], "model": model}}

    @model_validator(mode="after")
    def _sections_agree(self) -> "Params":
        model, top, bottom = self.vqvae.model, self.top_prior.model, self.bottom_prior.model
        from vqvp_core.clip import GIVEN_FRAMES

        model["size"], model["frames"] = self.ingest.size, self.ingest.clip_len  # derived (above)
        if self.ingest.clip_len <= GIVEN_FRAMES:
            raise ValueError(f"ingest.clip_len = {self.ingest.clip_len} must be > the {GIVEN_FRAMES} given frames")
        for key, value, want in (("top_prior.model.n_codes", top["n_codes"], model["n_codes"]),
                                 ("top_prior.model.n_codes_bottom", top["n_codes_bottom"], model["n_codes"]),
                                 ("bottom_prior.model.n_codes", bottom["n_codes"], model["n_codes"]),
                                 ("bottom_prior.model.n_codes_top", bottom["n_codes_top"], model["n_codes"]),
                                 ("top_prior.model.pred_steps", top["pred_steps"], (model["frames"] - GIVEN_FRAMES) // 4),
                                 ("bottom_prior.model.n_steps", bottom["n_steps"], model["frames"] // 2),
                                 ("bottom_prior.model.n_given", bottom["n_given"], 2)):
            if value != want:
                raise ValueError(f"{key} = {value} must be {want} to match vqvae.model "
                                 f"(n_codes {model['n_codes']}, frames {model['frames']}, {GIVEN_FRAMES} given frames)")
        if self.extract_latents.cond_frames != GIVEN_FRAMES:  # the VQ-VAE's encode_cond takes exactly these
            raise ValueError(f"extract_latents.cond_frames = {self.extract_latents.cond_frames}: the model conditions "
                             f"on exactly {GIVEN_FRAMES} given frames (vqvp_core/clip.py), as the paper does")
        return self


# Presets: partial values over the schema defaults (which are the `tiny` values).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"preset": "tiny"},
    # The tiny models at a longer CPU budget (about an hour on 2 cores): the README's prediction-quality
    # figures. At the demo's budget the bottom prior has seen 400 clips and its samples dissolve;
    # here it sees 12,000 (1,173 training clips, ~10 epochs).
    "tiny-long": {
        "preset": "tiny-long",
        "ingest": {"synthetic": {"n_videos": 480}},  # 1,440 clips: ~5x the demo's, ~10 s to render
        # causal encoders: the conditioning codes are the clip's own first codes (no seam between
        # given and predicted slices); bottom codes from the bottom features only: they no longer
        # vary with the top codes, which the decoder barely uses at this size (README, 'VQ-VAE')
        # the networks its README figures were measured with (the demo's before the 30 TFLOP recipe):
        # VQ-VAE-2's widths, 900 steps of 8 (the bottom prior's widths: _tiny_long_models)
        "vqvae": {"model": {"causal_encoder": True, "bottom_sees_top": False, "first_channels": 64,
                            "channels": 128, "res_channels": 64, "n_res_blocks": 2, "embed_dim": 64},
                  "train": {"steps": 900, "batch_size": 8, "lr": 1e-3, "ckpt_every": 300, "val_every": 300,
                            "fused_optimizer": False}},
        "top_prior": {"train": {"steps": 600, "ckpt_every": 200, "val_every": 200}},
        "bottom_prior": {"train": {"steps": 1500, "batch_size": 8, "lr": 1e-3, "ckpt_every": 250,
                                   "val_every": 250}},
        "sample": {"count": 120, "temperature": 1.0, "samples_per_clip": 8},  # the whole test split
    },
    "paper": {
        "preset": "paper",
        # 256x256 frames at Kinetics' usual 25 fps, as in the paper (section 3.1).
        "ingest": {"source": "kinetics.csv", "size": 256, "fps": 25.0, "shard_size": 64,
                   # if synthetic data is used at 256x256, keep motion the same relative to the frame
                   "synthetic": {"speed": (2.0, 12.0)}},
        # the paper: batch 16, 1M iterations (section 4); the model is VQVAEConfig.paper() (_paper_models)
        "vqvae": {"train": {"steps": 1_000_000, "batch_size": 16, "lr": 3e-4, "warmup_steps": 1000,
                            "ckpt_every": 5000, "val_every": 5000, "log_every": 100, "max_val_batches": 16}},
        "sample": {"temperature": 1.0, "samples_per_clip": 8, "batch_size": 16},  # the paper's temperature
        "flow": {"stage_timeout_s": 14 * 24 * 3600},  # 1M training steps take days on GPUs
    },
}


# Presets that are another preset plus their own values (every other value is the base's).
_BASED_ON = {"tiny-long": "tiny"}


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: `update`'s values over `base`'s, recursing into nested dicts."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _paper_models() -> dict[str, Any]:
    """The paper's models, whole (none of the tiny recipe's values leak in): the VQ-VAE of
    VQVAEConfig.paper() (twice VQ-VAE-2's widths, EMA decay 0.99), the prior sizes (VQ-VAE-2-like
    widths, 20 layers, attention every 5) and batches (section 4: 512 top, 32 bottom)."""
    from vqvp_core.models.bottom_prior import BottomPriorConfig
    from vqvp_core.models.top_prior import TopPriorConfig
    from vqvp_core.models.vqvae import VQVAEConfig

    long_run = {"steps": 1_000_000, "lr": 3e-4, "warmup_steps": 1000, "ckpt_every": 5000, "val_every": 5000,
                "log_every": 100, "max_val_batches": 16, "precision": "auto"}
    return {"vqvae": {"model": VQVAEConfig.paper().to_dict()},
            "top_prior": {"model": TopPriorConfig.paper().to_dict(), "train": {**long_run, "batch_size": 512}},
            "bottom_prior": {"model": BottomPriorConfig.paper().to_dict(), "train": {**long_run, "batch_size": 32}}}


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"preset = {name!r}: expected one of {sorted(PRESETS)}")
    data = PRESETS[name]
    if name == "paper":
        data = deep_merge(data, _paper_models())
    if name == "tiny-long":  # its bottom prior: BottomPriorConfig.tiny() whole, not the demo's recipe
        from vqvp_core.models.bottom_prior import BottomPriorConfig
        data = deep_merge(data, {"bottom_prior": {"model": BottomPriorConfig.tiny().to_dict()}})
    if name in _BASED_ON:  # a partial section is filled from the base preset, not from the
        data = deep_merge(preset_dict(_BASED_ON[name]), data)  # config dataclasses' defaults
    return without_derived(validate(data).model_dump(mode="json"))


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
