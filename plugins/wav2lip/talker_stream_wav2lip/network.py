"""The Wav2Lip generator (Prajwal et al., 2020), laid out so its checkpoints load unchanged.

Module names and order reproduce the original ``models/wav2lip.py``: every layer is a
``conv_block`` Sequential of (Conv2d or ConvTranspose2d, BatchNorm2d) followed by ReLU,
some with an identity shortcut, so ``face_encoder_blocks.0.0.conv_block.0.weight`` and
the rest of the released state dicts map one to one.

The forward pass is split in two because a talking portrait feeds the network the same
face on every frame: ``encode_face`` runs once per portrait and ``decode`` once per
frame with the cached skip features, which saves the face encoder's share of the work
(and makes the per-frame graph the one worth exporting to ONNX). ``decode`` can also
stop computing above a given output row: only the lower half of the face is pasted
back, and the rows above it cost a third of the decoder for nothing.
"""
from __future__ import annotations

import torch
from torch import nn

# (cin, cout, kernel, stride, padding, residual) per layer, stage by stage
FACE_ENCODER = [
    [(6, 16, 7, 1, 3, False)],  # 96x96
    [(16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True)],  # 48
    [(32, 64, 3, 2, 1, False)] + [(64, 64, 3, 1, 1, True)] * 3,  # 24
    [(64, 128, 3, 2, 1, False)] + [(128, 128, 3, 1, 1, True)] * 2,  # 12
    [(128, 256, 3, 2, 1, False)] + [(256, 256, 3, 1, 1, True)] * 2,  # 6
    [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)],  # 3
    [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],  # 1
]
AUDIO_ENCODER = [  # 1 x 80 x 16 mel window -> 512 x 1 x 1
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
# each decoder stage: an upsampling transposed conv (cin, cout, stride, padding, output padding),
# then residual 3x3 convs; its output is concatenated with the face feature of the same size
FACE_DECODER = [
    (None, 0),  # stage 0 is a single 1x1 conv, 512 -> 512
    ((1024, 512, 1, 0, 0), 1),  # 3x3
    ((1024, 512, 2, 1, 1), 2),  # 6x6
    ((768, 384, 2, 1, 1), 2),  # 12x12
    ((512, 256, 2, 1, 1), 2),  # 24x24
    ((320, 128, 2, 1, 1), 2),  # 48x48
    ((160, 64, 2, 1, 1), 2),  # 96x96
]
FACE_SIZE = 96
MEL_SHAPE = (80, 16)


class ConvBlock(nn.Module):
    """Conv (or transposed conv), batch norm, optional identity shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride, padding: int, residual: bool = False,
                 transpose: bool = False, output_padding: int = 0) -> None:
        super().__init__()
        conv = (nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding) if transpose
                else nn.Conv2d(cin, cout, kernel, stride, padding))
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def first_rows(from_row: int) -> list[int]:
    """Per decoder stage, the first row of its output that the rows from *from_row* on need.

    Computed backwards from the output: a 3x3 conv with padding 1 on rows [a, end) is
    exact only from a + 1 (it pads the cut with zeros), so each one costs a row above;
    a stride-2 transposed conv on rows [a, end) is exact from 2a, so the need halves.
    The two small stride-1 stages are computed whole.
    """
    need = [0] * len(FACE_DECODER)
    n = max(0, from_row - 1)  # the output block's 3x3 conv
    for i in range(len(FACE_DECODER) - 1, -1, -1):
        up, n_residual = FACE_DECODER[i]
        need[i] = n
        n = max(0, (n - n_residual) // 2) if up is not None and up[2] == 2 else 0
    return need


def _stage(layers) -> nn.Sequential:
    return nn.Sequential(*(ConvBlock(*layer) for layer in layers))


def _decoder_stage(up, n_residual: int) -> nn.Sequential:
    if up is None:
        return nn.Sequential(ConvBlock(512, 512, 1, 1, 0))
    cin, cout, stride, padding, output_padding = up
    first = ConvBlock(cin, cout, 3, stride, padding, transpose=True, output_padding=output_padding)
    return nn.Sequential(first, *(ConvBlock(cout, cout, 3, 1, 1, True) for _ in range(n_residual)))


class Wav2Lip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_stage(s) for s in FACE_ENCODER)
        self.audio_encoder = _stage(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList(_decoder_stage(*s) for s in FACE_DECODER)
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def encode_face(self, face: torch.Tensor) -> list[torch.Tensor]:
        """Skip features of a B x 6 x 96 x 96 input (masked face, reference face), coarse last."""
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, mel: torch.Tensor, feats: list[torch.Tensor], from_row: int = 0) -> torch.Tensor:
        """B x 3 x (96 - from_row) x 96 faces in [0, 1] for B x 1 x 80 x 16 mel windows.

        *feats* may have batch 1 (one portrait for every frame): they are broadcast.
        With *from_row* > 0 the large stages compute only the rows the output depends
        on, so the result equals the full output's rows from *from_row* on, for less work.
        """
        x = self.audio_encoder(mel)
        b = x.shape[0]
        for block, feat, first in zip(self.face_decoder_blocks, reversed(feats), first_rows(from_row)):
            x = block(x)
            x = x[:, :, x.shape[2] - (feat.shape[2] - first):]  # rows [first, end) of this resolution
            x = torch.cat((x, feat[:, :, first:].expand(b, -1, -1, -1)), dim=1)
        x = self.output_block(x)
        return x[:, :, x.shape[2] - (FACE_SIZE - from_row):]

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """The original signature: (B x 1 x 80 x 16 mel, B x 6 x 96 x 96 face) -> B x 3 x 96 x 96."""
        return self.decode(mel, self.encode_face(face))
