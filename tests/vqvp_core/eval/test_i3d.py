"""I3D weights built here in both formats (random, seeded), loaded through load_i3d: local and s3://
(moto on loopback), sha256 checks, clear errors, and features equal to the network's own output."""
import hashlib
import uuid
from typing import Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.s3server import moto_s3
from vqvp_core.eval.i3d import (
    MIN_FRAMES,
    I3DWeightsError,
    InceptionI3d,
    detect_format,
    load_i3d,
    preprocess_videos,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")


class StyleGANVCall(nn.Module):
    """StyleGAN-V's detector convention around a network: x (N, 3, T, H, W); rescale maps
    [0, 255] to [-1, 1]; resize to 224; return_features gives the logits, else the softmax."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=[x.shape[2], 224, 224], mode="trilinear", align_corners=False)
        logits = self.net(x)
        return logits if return_features else logits.softmax(1)


class Probe(nn.Module):
    """A tiny stand-in with the same signature: features describe the input it was given."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        f = x.float().flatten(1)
        n = x.shape[0]
        flags = torch.tensor([float(rescale), float(resize), float(return_features),
                              float(x.dtype == torch.uint8), float(x.shape[3]), float(x.shape[2])])
        return torch.cat([f.mean(1, keepdim=True), f.min(1, keepdim=True)[0], f.max(1, keepdim=True)[0],
                          flags.expand(n, 6)], 1)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Dict:
    """A seeded random InceptionI3d saved as a state dict and as a TorchScript; its direct output."""
    torch.manual_seed(0)
    net = InceptionI3d(400).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so loading them is tested too
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("i3d")
    state_path = root / "i3d_pretrained_400.pt"
    torch.save(net.state_dict(), state_path)
    script_path = root / "i3d_torchscript.pt"
    torch.jit.script(StyleGANVCall(net)).save(str(script_path))
    probe_path = root / "probe_torchscript.pt"
    torch.jit.script(Probe()).save(str(probe_path))
    videos = np.random.default_rng(0).integers(0, 256, size=(2, MIN_FRAMES, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        direct = net(preprocess_videos(torch.from_numpy(videos))).double().numpy()
    return dict(net=net, state=state_path, script=script_path, probe=probe_path, videos=videos, direct=direct)


def test_state_dict_keys_match_pytorch_i3d(built):
    sd = built["net"].state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4f.b3b.bn.running_var"] == (128,)
    assert shapes["Mixed_5c.b0.conv3d.weight"] == (384, 832, 1, 1, 1)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and shapes["logits.conv3d.bias"] == (400,)
    assert not any(k.startswith(("logits.bn", "avg_pool", "dropout")) or ".b3a." in k for k in sd)
    # 3 stem units + 9 Inception blocks x 6 units, each conv + 5 BN entries, plus the logits' weight and bias
    assert len(sd) == (3 + 9 * 6) * 6 + 2


def test_state_dict_loads_and_matches_direct_output(built):
    ex = load_i3d(str(built["state"]), sha256=_sha(built["state"]))  # format auto
    assert ex.format == "state_dict" and ex.dim == 400
    assert ex.info.sha256_checked and ex.info.sha256 == _sha(built["state"])
    feats = ex.features(built["videos"], batch_size=2, disable=True)
    assert feats.dtype == np.float64 and feats.shape == (2, 400)
    np.testing.assert_allclose(feats, built["direct"], rtol=1e-5, atol=1e-6)
    proto = ex.protocol()
    assert proto["weights"]["format"] == "state_dict" and "224" in proto["preprocessing"]


def test_legacy_state_dict_without_batch_counters_and_module_prefix(built, tmp_path):
    sd = {f"module.{k}": v for k, v in built["net"].state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)  # the pre-1.6 pickle format
    ex = load_i3d(str(path), layer="pool")
    loaded = ex.model.state_dict()
    for k, v in built["net"].state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k
    assert ex.dim == 1024 and ex.layer == "pool"
    # the 1024-d path without another full forward: a stand-in trunk giving (N, 1024, T', 1, 1)
    ex.model.trunk = lambda x: x.mean((1, 3, 4), keepdim=True)[:, :, :2].expand(-1, 1024, -1, 1, 1)
    feats = ex.features(built["videos"][:1], disable=True)
    x = preprocess_videos(torch.from_numpy(built["videos"][:1]))
    assert feats.shape == (1, 1024)
    np.testing.assert_allclose(feats, x.mean((1, 3, 4))[:, :2].mean(1, keepdim=True).expand(1, 1024).double(), rtol=1e-5)


def test_torchscript_loads_and_matches(built):
    ex = load_i3d(str(built["script"]), sha256=_sha(built["script"]), format="auto")
    assert ex.format == "torchscript" and detect_format(built["script"].read_bytes()) == "torchscript"
    assert detect_format(built["state"].read_bytes()) == "state_dict"
    feats = ex.features(built["videos"][:1], disable=True)  # one video: the full I3D is slow on CPU
    assert feats.shape == (1, 400) and ex.dim == 400
    np.testing.assert_allclose(feats, built["direct"][:1], rtol=1e-5, atol=1e-6)


def test_torchscript_call_conventions(built):
    videos = built["videos"][:, :4]
    ex = load_i3d(str(built["probe"]))
    f = ex.features(videos, disable=True)  # ours: preprocessed [-1, 1] 224x224, rescale/resize off
    x = preprocess_videos(torch.from_numpy(videos)).flatten(1)
    np.testing.assert_allclose(f[:, 0], x.mean(1).double().numpy(), rtol=1e-5)
    assert f[:, 1].min() >= -1 and f[:, 2].max() <= 1
    np.testing.assert_array_equal(f[0, 3:], [0, 0, 1, 0, 224, 4])
    ex2 = load_i3d(str(built["probe"]), torchscript_preprocess=True)  # StyleGAN-V's own call
    g = ex2.features(videos, disable=True)
    np.testing.assert_array_equal(g[0, 3:], [1, 1, 1, 1, 32, 4])
    np.testing.assert_allclose(g[:, 0], videos.reshape(2, -1).mean(1), rtol=1e-5)


def test_features_stream_in_batches(built):
    ex = load_i3d(str(built["probe"]))
    rng = np.random.default_rng(1)
    videos = rng.integers(0, 256, size=(5, 2, 8, 8, 3), dtype=np.uint8)
    whole = ex.features(videos, batch_size=5, disable=True)
    np.testing.assert_allclose(ex.features(videos, batch_size=2, disable=True), whole, rtol=1e-6)
    chunks = iter([videos[:3], videos[3:]])
    np.testing.assert_allclose(ex.features(chunks, batch_size=2, disable=True), whole, rtol=1e-6)
    np.testing.assert_allclose(ex.features(torch.from_numpy(videos), disable=True), whole, rtol=1e-6)


def test_preprocess_reference_convention():
    v = torch.full((1, 2, 10, 10, 3), 51, dtype=torch.uint8)
    x = preprocess_videos(v)
    assert x.shape == (1, 3, 2, 224, 224)
    torch.testing.assert_close(x, torch.full_like(x, (51 / 255 - 0.5) * 2))
    # non-square: shorter side to 224 (bilinear, align_corners=False), centre crop
    r = torch.randint(0, 256, (1, 1, 32, 48, 3), dtype=torch.uint8)
    frame = r[0, 0].permute(2, 0, 1)[None].float() / 255
    ref = F.interpolate(frame, size=(224, 336), mode="bilinear", align_corners=False)[:, :, :, 56:280]
    torch.testing.assert_close(preprocess_videos(r)[:, :, 0], (ref - 0.5) * 2)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_videos(v.float())


def test_sha256_mismatch_is_clear(built):
    wrong = "ab" * 32
    with pytest.raises(I3DWeightsError) as exc:
        load_i3d(str(built["state"]), sha256=wrong)
    msg = str(exc.value)
    assert "sha256 mismatch" in msg and wrong in msg and _sha(built["state"]) in msg and str(built["state"]) in msg
    ex = load_i3d(str(built["state"]), sha256="sha256:" + _sha(built["state"]).upper())
    assert ex.info.sha256_checked
    with pytest.raises(I3DWeightsError, match="64 hex"):
        load_i3d(str(built["state"]), sha256="1234")


def test_missing_and_bad_files_are_clear(built, tmp_path):
    missing = tmp_path / "nope" / "i3d_pretrained_400.pt"
    with pytest.raises(I3DWeightsError, match="not found") as exc:
        load_i3d(str(missing))
    assert str(missing) in str(exc.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(I3DWeightsError, match="empty"):
        load_i3d(str(tmp_path / "empty.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a model at all" * 10)
    with pytest.raises(I3DWeightsError, match="not a readable PyTorch state dict"):
        load_i3d(str(tmp_path / "junk.pt"))
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(I3DWeightsError, match="not an InceptionI3d"):
        load_i3d(str(tmp_path / "linear.pt"))
    partial = {k: v for k, v in built["net"].state_dict().items() if not k.startswith("Mixed_5c")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(I3DWeightsError, match="missing .*Mixed_5c"):
        load_i3d(str(tmp_path / "partial.pt"))
    with pytest.raises(I3DWeightsError, match="TorchScript archive"):
        load_i3d(str(built["script"]), format="state_dict")
    with pytest.raises(I3DWeightsError, match="TorchScript"):
        load_i3d(str(built["state"]), format="torchscript")


def test_too_few_frames(built):
    ex = load_i3d(str(built["state"]))
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames"):
        ex.features(built["videos"][:, :MIN_FRAMES - 1], disable=True)


def test_load_from_s3(built, monkeypatch):
    import s3fs

    with moto_s3(monkeypatch) as endpoint:
        opts = {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**opts)
        bucket = f"weights-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        fs.put(str(built["state"]), f"{bucket}/i3d/i3d_pretrained_400.pt")
        s3fs.S3FileSystem.clear_instance_cache()
        url = f"s3://{bucket}/i3d/i3d_pretrained_400.pt"
        ex = load_i3d(url, sha256=_sha(built["state"]), storage_options=opts)
        assert ex.info.source == url and ex.format == "state_dict"
        loaded = ex.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in built["net"].state_dict().items())
        with pytest.raises(I3DWeightsError, match="not found"):
            load_i3d(f"s3://{bucket}/i3d/missing.pt", storage_options=opts)
        s3fs.S3FileSystem.clear_instance_cache()


def test_load_from_http_without_range_requests(built):
    """https:// sources go through fsspec's HTTP filesystem, streamed (file hosts such as Dropbox
    may refuse range requests; Python's http.server does too). Served here on loopback."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built["state"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ex = load_i3d(f"{base}/{built['state'].name}", sha256=_sha(built["state"]))
        assert ex.format == "state_dict" and ex.info.size_bytes == built["state"].stat().st_size
        with pytest.raises(I3DWeightsError, match="not found"):
            load_i3d(f"{base}/missing.pt")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
