"""3D convolutional building blocks of the VQ-VAE: VQ-VAE-2 (rosinality) blocks, in 3D.

Every down/upsampling step is given as a stride per axis (T, H, W), each 1 or 2. A stride-2
axis uses kernel 4, padding 1 (exactly halves / doubles that axis, for any even size, down to
2 -> 1); a stride-1 axis uses kernel 3, padding 1 (keeps it).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalTimeConv3d", "ResBlock", "Encoder3d", "Decoder3d", "channels_last_convs"]

Stride = tuple[int, int, int]


def channels_last_convs(module: nn.Module) -> nn.Module:
    """Store every conv kernel of ``module`` channels-last (2D: torch.channels_last, 3D:
    channels_last_3d), so oneDNN / cuDNN run those convs channels-last instead of reordering the
    weights on every call. ``.to(device)`` keeps the format and ``load_state_dict`` copies values
    into it. 1x1(x1) kernels stay as they are: the same layout, but ambiguous strides that make
    DDP warn about gradient strides. Returns ``module``."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    for mod in module.modules():
        if isinstance(mod, nn.modules.conv._ConvNd) and mod.weight.dim() in formats and mod.weight[0, 0].numel() > 1:
            mod.weight.data = mod.weight.data.contiguous(memory_format=formats[mod.weight.dim()])
    return module


def _kernel(stride: Stride) -> tuple[int, int, int]:
    if any(s not in (1, 2) for s in stride):
        raise ValueError(f"strides must be 1 or 2 per axis, got {stride}")
    return tuple(4 if s == 2 else 3 for s in stride)  # type: ignore[return-value]


class CausalTimeConv3d(nn.Conv3d):
    """A Conv3d whose time axis is padded at the front only, by kernel - stride steps: output
    step t' (frames [st*t', st*t' + st) of the input) sees no input step after its own block.
    Space is padded as given. Same parameters as the nn.Conv3d it replaces."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride=1, padding: int = 1):
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=(0, padding, padding))
        self.front = kernel[0] - stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, C', T / st, ...)
        return super().forward(F.pad(x, (0, 0, 0, 0, self.front, 0)))


def _conv(causal_time: bool, *args, **kwargs) -> nn.Conv3d:
    return CausalTimeConv3d(*args, **kwargs) if causal_time else nn.Conv3d(*args, **kwargs)


class ResBlock(nn.Module):
    """x + conv1x1(act(convKxK(act(x)))): VQ-VAE-2's residual block, the one of every vqvp model.

    dims: 3 (T, H, W) or 2 (H, W); causal_time: the 3D conv pads time on the past side only (the
    VQ-VAE's causal encoders); activation: relu in the VQ-VAE (as VQ-VAE-2), elu in the priors'
    conditioning stacks (which see only given codes and need no mask; ELU as in PixelCNN++)."""

    def __init__(self, channels: int, hidden: int, dims: int = 3, kernel: int = 3, causal_time: bool = False,
                 activation: str = "relu") -> None:
        super().__init__()
        if dims not in (2, 3) or (causal_time and dims != 3) or activation not in ("relu", "elu"):
            raise ValueError(f"ResBlock: dims 2 or 3 (causal_time needs 3), activation relu or elu; got "
                             f"dims={dims}, causal_time={causal_time}, activation={activation!r}")
        if dims == 3:
            self.conv1 = _conv(causal_time, channels, hidden, kernel, padding=kernel // 2)
        else:
            self.conv1 = nn.Conv2d(channels, hidden, kernel, padding=kernel // 2)
        self.conv2 = (nn.Conv3d if dims == 3 else nn.Conv2d)(hidden, channels, 1)
        self.act = F.relu if activation == "relu" else F.elu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class Encoder3d(nn.Module):
    """Strided convs (one per entry of ``strides``), a 3x3x3 conv, residual blocks, ReLU.

    (B, in_channels, T, H, W) -> (B, channels, T/prod(st), H/prod(sh), W/prod(sw)).
    The first strided conv outputs ``first_channels``, later ones ``channels``.
    ``causal_time``: every conv pads time at the front only (CausalTimeConv3d), so the output at
    step t' depends on input frames up to the end of its own block, never later ones.
    """

    def __init__(self, in_channels: int, channels: int, first_channels: int, n_res_blocks: int,
                 res_channels: int, strides: Sequence[Stride], causal_time: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, s in enumerate(strides):
            out = first_channels if i == 0 else channels
            layers += [_conv(causal_time, c, out, _kernel(s), stride=s, padding=1), nn.ReLU(inplace=True)]
            c = out
        layers.append(_conv(causal_time, c, channels, 3, padding=1))
        layers += [ResBlock(channels, res_channels, causal_time=causal_time) for _ in range(n_res_blocks)]
        layers.append(nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Decoder3d(nn.Module):
    """A 3x3x3 conv, residual blocks, ReLU, transposed convs (one per entry of ``strides``).

    (B, in_channels, T, H, W) -> (B, out_channels, T*prod(st), H*prod(sh), W*prod(sw)).
    Transposed convs output ``first_channels`` except the last, which gives ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int, first_channels: int,
                 n_res_blocks: int, res_channels: int, strides: Sequence[Stride]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(in_channels, channels, 3, padding=1)]
        layers += [ResBlock(channels, res_channels) for _ in range(n_res_blocks)]
        layers.append(nn.ReLU(inplace=True))
        c = channels
        for i, s in enumerate(strides):
            last = i == len(strides) - 1
            out = out_channels if last else first_channels
            layers.append(nn.ConvTranspose3d(c, out, _kernel(s), stride=s, padding=1))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            c = out
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
