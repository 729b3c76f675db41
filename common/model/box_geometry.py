"""Sinusoidal embedding of box position and size relative to the image, as VL-BERT's RoI features use."""
from __future__ import annotations

import torch
from torch import Tensor


def box_geometry_embedding(boxes: Tensor, im_wh: Tensor, dim: int = 2048, wave_length: float = 1000.0) -> Tensor:
    """Embed boxes [..., 4] (x1, y1, x2, y2) in an image of size im_wh [..., 2] (W, H) -> [..., dim] float32.

    Per box: centre and size (xc, yc, w, h) = ((x1+x2)/2, (y1+y2)/2, x2-x1, y2-y1), no +1; normalised
    p = 100 * (xc/W, yc/H, w/W, h/H); with n = dim / 8 frequencies f_j = wave_length^(j/n), each coordinate
    gives [sin(p/f_0..n-1), cos(p/f_0..n-1)] and the four are concatenated in the order xc, yc, w, h.
    `im_wh` may have fewer leading dims than `boxes` (e.g. [B, 2] with boxes [B, N, 4]); it is broadcast over
    the missing box dims. Computed in float32 whatever the input dtype (sin of values up to 100 needs it).
    """
    if dim % 8 != 0:
        raise ValueError(f"box geometry embedding dim must be a multiple of 8, found {dim}")
    if boxes.shape[-1] != 4 or im_wh.shape[-1] != 2:
        raise ValueError(f"expected boxes [..., 4] and im_wh [..., 2], "
                         f"found {tuple(boxes.shape)} and {tuple(im_wh.shape)}")
    boxes = boxes.float()
    im_wh = im_wh.float()
    while im_wh.dim() < boxes.dim():
        im_wh = im_wh.unsqueeze(-2)
    x1, y1, x2, y2 = boxes.unbind(-1)
    width, height = im_wh.unbind(-1)
    position = torch.stack(
        [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], dim=-1
    ) * 100.0  # [..., 4]
    num_freq = dim // 8
    exponents = torch.arange(num_freq, dtype=torch.float32, device=boxes.device) / num_freq
    angles = position.unsqueeze(-1) / (wave_length ** exponents)  # [..., 4, n]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 4, 2n]
    return embedding.flatten(-2)
