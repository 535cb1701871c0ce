"""The U-Net branches of the Instance-U-Net: shared encoder and up-sampling decoder.

Encoder (paper, Fig. 1): a first step 1 -> ``width`` channels, then per
step two 3x3 convolutions and a channel-doubling 3x3 convolution, each step
followed by 2x2 max-pooling. With ``width = 64`` a 448x448x1 input ends as
the shared 28x28x512 feature map at stride 16. Choices where the paper is
silent: every convolution is conv-BatchNorm-ReLU with padding 1 (sizes are
preserved, so any input whose sides are multiples of 16 works); the first
step is two 3x3 convolutions at full resolution; two 3x3 convolutions at
stride 16 refine the shared map before the RPN and the decoder read it.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias), BatchNorm and ReLU: the building block of both branches.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.

    Returns
    -------
    torch.nn.Sequential
        Maps ``(B, c_in, H, W)`` to ``(B, c_out, H, W)`` (sizes preserved).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Encoder(nn.Module):
    """Down-sampling branch; returns the stride-16 map and the four skip maps.

    Parameters
    ----------
    width : int, optional
        Channels ``w`` of the first step (paper: 64).
    in_channels : int, optional
        Channels of the input image.
    """

    def __init__(self, width: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn_relu(in_channels, w), conv_bn_relu(w, w))
        self.steps = nn.ModuleList(
            nn.Sequential(conv_bn_relu(c, c), conv_bn_relu(c, c), conv_bn_relu(c, 2 * c)) for c in (w, 2 * w, 4 * w)
        )
        self.bottom = nn.Sequential(conv_bn_relu(8 * w, 8 * w), conv_bn_relu(8 * w, 8 * w))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``x``.

        Parameters
        ----------
        x : (B, in_channels, H, W) float tensor
            H and W multiples of 16 px.

        Returns
        -------
        features : (B, 8w, H/16, W/16) tensor
            The shared stride-16 map read by the decoder and the RPN.
        skips : list of 4 tensors
            Maps at strides 1, 2, 4 and 8 with ``w, 2w, 4w, 8w`` channels.
        """
        skips = [self.stem(x)]
        for step in self.steps:
            skips.append(step(self.pool(skips[-1])))
        return self.bottom(self.pool(skips[-1])), skips


class UpStep(nn.Module):
    """2x transposed-convolution up-sampling, concatenation with the skip, two 3x3 convolutions.

    Parameters
    ----------
    c_in, c_skip, c_out : int
        Channels of the coarser input, of the skip map and of the output.
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.convs = nn.Sequential(conv_bn_relu(c_out + c_skip, c_out), conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``(B, c_in, h, w)`` and skip ``(B, c_skip, 2h, 2w)`` to ``(B, c_out, 2h, 2w)``."""
        return self.convs(torch.cat((self.up(x), skip), dim=1))


class Decoder(nn.Module):
    """Up-sampling branch: 4 up-steps from stride 16 to 1 and a 1x1 conv to 2 class logits.

    Parameters
    ----------
    width : int, optional
        ``w`` of the matching :class:`Encoder`.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.ups = nn.ModuleList(
            UpStep(c_in, c_skip, c_out)
            for c_in, c_skip, c_out in ((8 * w, 8 * w, 4 * w), (4 * w, 4 * w, 2 * w), (2 * w, 2 * w, w), (w, w, w))
        )
        self.head = nn.Conv2d(w, 2, 1)

    def forward(self, features: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode the encoder's outputs.

        Parameters
        ----------
        features : (B, 8w, H/16, W/16) tensor
            The encoder's stride-16 map.
        skips : list of tensors
            The encoder's skip maps, stride 1 first.

        Returns
        -------
        (B, 2, H, W) tensor
            Logits of (background, foreground); the softmax over dim 1 gives
            the foreground probability.
        """
        x = features
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.head(x)
