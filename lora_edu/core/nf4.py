"""NF4, QLoRA's 4-bit NormalFloat, from first principles, code-for-code equal to bitsandbytes.

Three ideas (Dettmers et al. 2023, arXiv:2305.14314, §3):

* **The code book.** 16 values placed at quantiles of the standard normal, so that weights
  that are roughly normal use every code about equally often. It is asymmetric (8 positive
  values, 7 negative, and an exact 0) so that zero is represented exactly. :func:`nf4_code_book`
  derives it the way bitsandbytes' ``create_normal_map`` does and reproduces the table that
  bitsandbytes stores (``get_4bit_type("nf4")``) bit for bit.
* **Block-wise absmax.** The flattened weight is cut into blocks of ``blocksize`` numbers; each
  block is divided by its largest absolute value (its *absmax*, kept in float32) and every
  number is replaced by the index of the nearest code. Two 4-bit indices share a byte, the
  first of a pair in the high nibble (bitsandbytes' packing).
* **Double quantization.** The absmax values themselves cost 32 bits per block; QLoRA
  quantizes them again to 8 bits in blocks of 256, after subtracting their mean. bitsandbytes
  uses its 8-bit *dynamic* code book for that (:func:`dynamic_code_book`; arXiv:1511.04561).

Everything here mirrors what ``bitsandbytes.functional.quantize_4bit`` does on a CPU (0.50.2,
``backends/default/ops.py``), including its float arithmetic (a multiply by 1/absmax, ties
between two codes going to the lower one), so that the codes are identical, not just close.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: The block sizes bitsandbytes' ``quantize_4bit`` accepts.
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Double quantization: blocks of 256 absmax values, as bitsandbytes does (and QLoRA §3).
ABSMAX_BLOCKSIZE = 256
#: The outermost quantile of the NF4 code book as bitsandbytes writes it: the mean of
#: 1 − 1/(2·15) and 1 − 1/(2·16), rounded to 7 digits (with all digits one code differs by 1 ulp).
NF4_OFFSET = 0.9677083


class QuantizationError(ValueError):
    """A weight or setting that NF4 quantization cannot take."""


def nf4_code_book(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, sorted, in [-1, 1], from quantiles of N(0, 1).

    Positive side: the normal quantile function at 8 points evenly spaced from ``offset`` down
    to (not including) 0.5; negative side: the same at 7 points; plus an exact 0. Both sides are
    then divided by the largest value, so the code book spans [-1, 1]. ``offset`` < 1 because the
    quantile at 1 is infinite. The arithmetic (float32 points, float64 quantiles, float32 result)
    is bitsandbytes' ``create_normal_map``; ``torch.special.ndtri`` is the quantile function.
    """
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return values / values.max()


def dynamic_code_book() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic code book (``create_dynamic_map()``), used for double quantization.

    256 values in [-1, 1]: for each decimal exponent 10⁻⁶ … 10⁰ a linear grid of fractions in
    [0.1, 1], finer where the exponent is larger; plus 0 and 1. Small numbers get relative
    precision, like a float.
    """
    data: list[float] = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist() + (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def fp4_code_book() -> torch.Tensor:
    """bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit), sorted and scaled to [-1, 1]: the float alternative.

    Magnitudes 2^e·(1 + m/2) for e = 1, 2, 3 and m = 0, 1 (2, 3, 4, 6, 8, 12), a subnormal 0.0625
    and 0, divided by 12 (``get_4bit_type("fp4")``). ±0 are one value, so 15 distinct codes.
    """
    magnitudes = [0.0, 0.0625] + [2.0**e * (1 + m / 2) for e in (1, 2, 3) for m in (0, 1)]
    values = sorted({v / 12 for v in magnitudes} | {-v / 12 for v in magnitudes})
    return torch.tensor(values, dtype=torch.float32)


def int4_code_book() -> torch.Tensor:
    """Symmetric 4-bit integers −7…7, scaled to [-1, 1] (bitsandbytes' ``get_4bit_type("int4")``): evenly spaced codes."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def roundtrip(weight: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """Block-wise absmax quantization of ``weight`` with any sorted ``code`` book, and back: what the weight becomes."""
    indices, absmax = blockwise_absmax_quantize(weight.detach().reshape(-1), code, blocksize)
    return (code[indices.long()].reshape(-1, blocksize) * absmax.unsqueeze(1)).reshape(weight.shape)


def blockwise_absmax_quantize(flat: torch.Tensor, code: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the nearest code (``code`` sorted) for each number of ``flat``, and each block's absmax (float32).

    Nearest code = the first midpoint between neighbours that is not below the number
    (``bucketize``), so a number exactly between two codes takes the lower one. A last block
    shorter than ``blocksize`` gets its own absmax. The float steps are bitsandbytes' (its
    PyTorch kernels in ``backends/default/ops.py``): full blocks multiply by 1/absmax, the
    short block divides; the same numbers then give the same codes.
    """
    flat = flat.float()
    full = flat.numel() - flat.numel() % blocksize
    blocks = flat[:full].reshape(-1, blocksize)
    absmax = blocks.abs().max(dim=1).values
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), -1, 1).reshape(-1)
    if full < flat.numel():
        last = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, last.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / last, -1, 1)])
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, midpoints).to(torch.uint8), absmax


@dataclass(frozen=True)
class NF4Tensor:
    """A weight in NF4: packed codes, one scale per block, and what is needed to undo it.

    ``codes``: uint8, two 4-bit indices per byte (first of a pair in the high nibble), flat.
    ``absmax``: float32 per block; or, with double quantization, uint8 indices into
    :func:`dynamic_code_book`, with ``absmax_scale`` (float32, one per 256 blocks) and
    ``absmax_offset`` (their mean, added back).
    """

    codes: torch.Tensor
    absmax: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def bits_per_parameter(self) -> float:
        """Storage in bits per weight: 4 for the code plus the scales, amortised over a block."""
        return bits_per_parameter(self.blocksize, self.double_quant)

    def nbytes(self) -> int:
        extra = [] if self.absmax_scale is None else [self.absmax_scale, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in [self.codes, self.absmax, *extra])


def bits_per_parameter(blocksize: int = 64, double_quant: bool = False, absmax_blocksize: int = ABSMAX_BLOCKSIZE) -> float:
    """4 bits of code + the block's scale per weight: 32/blocksize, or 8/blocksize + 32/(blocksize·256) when double-quantized.

    QLoRA §3 gives 32/64 = 0.5 bits without and 8/64 + 32/(64·256) = 0.127 bits with double
    quantization, so 4.127 bits a parameter at blocksize 64.
    """
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * absmax_blocksize)


def _check(weight, blocksize) -> None:
    if not isinstance(weight, torch.Tensor):
        raise QuantizationError(f"weight must be a torch.Tensor, got {type(weight).__name__}; pass e.g. layer.weight.data.")
    if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        fix = "cast it with .float()" if weight.is_floating_point() else "NF4 quantizes float weights; pass the float weight, not codes or indices"
        raise QuantizationError(f"weight has dtype {weight.dtype}, but NF4 (like bitsandbytes) takes float32, float16 or bfloat16; {fix}.")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in BLOCKSIZES:
        raise QuantizationError(f"blocksize={blocksize!r} is not one bitsandbytes supports; use one of {BLOCKSIZES} (QLoRA uses 64).")
    if weight.numel() % blocksize:
        fits = [b for b in BLOCKSIZES if weight.numel() % b == 0]
        fix = f"use one that does: {fits}" if fits else "pad the weight to a multiple of 32 numbers"
        raise QuantizationError(f"blocksize {blocksize} does not divide the weight's {weight.numel()} numbers; {fix}.")
    if not torch.isfinite(weight).all():
        raise QuantizationError("the weight holds NaN or inf; a block's absmax would be meaningless. Fix the weight first.")


def nf4_quantize(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = False) -> NF4Tensor:
    """Quantize ``weight`` to NF4 as ``bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")`` does.

    ``double_quant=True`` is bitsandbytes' ``compress_statistics=True``. The input is never changed.
    """
    _check(weight, blocksize)
    q, absmax = blockwise_absmax_quantize(weight.detach().reshape(-1), nf4_code_book(), blocksize)
    packed = (q[0::2] << 4) | q[1::2]  # the first of each pair in the high nibble
    if not double_quant:
        return NF4Tensor(packed, absmax, weight.shape, weight.dtype, blocksize)
    offset = absmax.mean()
    q2, scale = blockwise_absmax_quantize(absmax - offset, dynamic_code_book(), ABSMAX_BLOCKSIZE)
    return NF4Tensor(packed, q2, weight.shape, weight.dtype, blocksize, scale, offset)


def block_scales(q: NF4Tensor) -> torch.Tensor:
    """Each block's absmax (float32), decoded from the 8-bit codes first when double-quantized."""
    if not q.double_quant:
        return q.absmax
    code = dynamic_code_book()
    n = q.absmax.numel()
    per_value_scale = q.absmax_scale.repeat_interleave(ABSMAX_BLOCKSIZE)[:n]
    return code[q.absmax.long()] * per_value_scale + q.absmax_offset


def nf4_dequantize(q: NF4Tensor) -> torch.Tensor:
    """The float weight back: code value × block absmax, computed in float32, returned in the original dtype."""
    if not isinstance(q, NF4Tensor):
        raise QuantizationError(f"nf4_dequantize takes what nf4_quantize returns (an NF4Tensor), got {type(q).__name__}.")
    indices = torch.stack([q.codes >> 4, q.codes & 0xF], dim=1).reshape(-1).long()
    values = nf4_code_book()[indices].reshape(-1, q.blocksize) * block_scales(q).unsqueeze(1)
    return values.reshape(q.shape).to(q.dtype)


class NF4Linear(nn.Module):
    """A frozen linear layer stored in NF4: the weight is dequantized for each forward pass (QLoRA's base).

    Only the 4-bit codes and the scales are kept, no float copy of the weight; the bias (if
    any) stays in float. Nothing here is trainable: wrap it in ``LoRALinear`` to train an
    adapter on top, which is QLoRA. Gradients still flow *through* it to the input.
    """

    def __init__(self, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise QuantizationError(f"NF4Linear quantizes an nn.Linear, got {type(linear).__name__}.")
        weight = linear.weight.detach()
        if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            weight = weight.float() if weight.is_floating_point() else weight
        self.quantized = nf4_quantize(weight, blocksize, double_quant)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        return nf4_dequantize(self.quantized).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        q = self.quantized
        return (f"in={self.in_features}, out={self.out_features}, blocksize={q.blocksize}, "
                f"double_quant={q.double_quant}, {q.bits_per_parameter():.3f} bits/parameter")
