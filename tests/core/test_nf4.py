"""NF4 from scratch against bitsandbytes 0.50.2 on the CPU: the same code book, codes, scales and weights."""
import pytest
import torch
from torch import nn

from lora_edu.core import nf4

bnb = pytest.importorskip("bitsandbytes")
BF = bnb.functional

# bitsandbytes' pure-PyTorch kernel (backends/default/ops.py), reached past its CPU C kernel
DEFAULT_KERNEL = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def weights():
    torch.manual_seed(0)
    for shape in [(128, 64), (48, 256), (64 * 257,), (16, 512)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            yield (torch.randn(shape) * 0.02).to(dtype)


def test_code_books_are_derived_and_equal_bitsandbytes_bit_for_bit():
    assert torch.equal(nf4.nf4_code_book(), BF.get_4bit_type("nf4", device="cpu"))
    table = BF.create_normal_map()
    assert torch.equal(nf4.nf4_code_book(), torch.cat([table[:7], table[-9:]]))  # 256-long, zeros in the middle
    assert torch.equal(nf4.dynamic_code_book(), BF.create_dynamic_map())
    # the offset is the mean of 1 - 1/30 and 1 - 1/32, rounded: unrounded, the table differs by at most 1 ulp
    exact = nf4.nf4_code_book((1 - 1 / 30 + 1 - 1 / 32) / 2)
    assert not torch.equal(exact, nf4.nf4_code_book()) and (exact - nf4.nf4_code_book()).abs().max() < 3e-7
    code = nf4.nf4_code_book()
    assert code[7] == 0 and (code > 0).sum() == 8 and (code < 0).sum() == 7 and code[0] == -1 and code[-1] == 1


@pytest.mark.parametrize("blocksize", nf4.BLOCKSIZES)
def test_codes_absmax_and_weights_equal_bitsandbytes(blocksize):
    for w in weights():
        if w.numel() % blocksize:
            continue
        packed, state = BF.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
        q = nf4.nf4_quantize(w, blocksize)
        assert q.codes.dtype == torch.uint8 and torch.equal(q.codes, packed.reshape(-1))  # identical codes and packing
        assert q.absmax.dtype == torch.float32 and torch.equal(q.absmax, state.absmax)
        out = nf4.nf4_dequantize(q)
        # bit for bit, not just close (bitsandbytes returns a 1-D weight as 1×n: compare values)
        assert out.dtype == w.dtype and torch.equal(out, BF.dequantize_4bit(packed, state).reshape(w.shape))


@pytest.mark.parametrize("blocksize", [32, 64, 128, 1024])
def test_double_quantization_equals_bitsandbytes(blocksize):
    """4-bit codes identical; the 8-bit codes of the absmax equal bitsandbytes' PyTorch kernel; weights bit for bit.

    bitsandbytes' compiled CPU kernel for the 8-bit step (``cquantize_blockwise_cpu_fp32``) picks, for under 5 %
    of the absmax values here, the code next to the nearest one (farther from the value); its PyTorch kernel
    (and ours) the nearest.
    """
    code = nf4.dynamic_code_book()
    for w in weights():
        if w.numel() % blocksize:
            continue
        packed, state = BF.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
        q = nf4.nf4_quantize(w, blocksize, double_quant=True)
        assert torch.equal(q.codes, packed.reshape(-1))
        assert torch.equal(q.absmax_offset, state.offset) and torch.equal(q.absmax_scale, state.state2.absmax)
        raw = nf4.nf4_quantize(w, blocksize).absmax
        ref_codes, ref_scale = torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(DEFAULT_KERNEL, raw - state.offset, code, 256)
        assert torch.equal(q.absmax, ref_codes) and torch.equal(q.absmax_scale, ref_scale)
        differ = q.absmax != state.absmax
        assert differ.float().mean() < 0.05
        x = (raw - state.offset) / q.absmax_scale.repeat_interleave(256)[: raw.numel()]
        assert ((x - code[q.absmax.long()]).abs() < (x - code[state.absmax.long()]).abs())[differ].all()  # ours is nearer
        assert ((q.absmax.long() - state.absmax.long()).abs()[differ] == 1).all()  # and theirs is the neighbouring code
        state.absmax = q.absmax  # the same 8-bit codes: then bitsandbytes dequantizes to exactly our weights
        assert torch.equal(nf4.nf4_dequantize(q), BF.dequantize_4bit(packed, state).reshape(w.shape))


def test_packing_order_and_bits_per_parameter():
    w = torch.tensor([1.0, -1.0] + [0.0] * 62)
    q = nf4.nf4_quantize(w)
    assert q.codes[0] == (15 << 4 | 0)  # first value in the high nibble
    assert nf4.bits_per_parameter(64) == 4.5 and round(nf4.bits_per_parameter(64, True), 3) == 4.127
    big = torch.randn(1024, 1024)
    assert nf4.nf4_quantize(big, 64, True).nbytes() * 8 / big.numel() == pytest.approx(nf4.bits_per_parameter(64, True), abs=1e-4)


def test_nf4_linear_equals_bitsandbytes_linear4bit():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    ref = bnb.nn.Linear4bit(64, 32, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=False)
    ref.load_state_dict(linear.state_dict())
    ref = ref.to("cpu")  # quantizes
    ours = nf4.NF4Linear(linear, 64, double_quant=False)
    x = torch.randn(5, 64)
    assert torch.allclose(ours(x), ref(x), atol=1e-6, rtol=1e-5)
    assert not any(p.requires_grad for p in ours.parameters())


@pytest.mark.parametrize("bad, match", [
    (dict(blocksize=48), "not one bitsandbytes supports"),
    (dict(blocksize=True), "not one bitsandbytes supports"),
    (dict(blocksize=4096), "does not divide"),
])
def test_bad_blocksize_is_refused_and_changes_nothing(bad, match):
    w = torch.randn(10, 64)
    before = w.clone()
    with pytest.raises(nf4.QuantizationError, match=match) as err:
        nf4.nf4_quantize(w, **bad)
    assert torch.equal(w, before)
    if "divide" in match:
        assert "[32, 64, 128]" in str(err.value)  # names the block sizes that would work


@pytest.mark.parametrize("w, match", [
    (torch.arange(64), "int64.*float weights"),
    (torch.randn(64, dtype=torch.float64), "float64.*\\.float\\(\\)"),
    ([0.0] * 64, "torch.Tensor"),
    (torch.full((64,), float("nan")), "NaN"),
])
def test_non_float_weight_is_refused(w, match):
    with pytest.raises(nf4.QuantizationError, match=match):
        nf4.nf4_quantize(w)
    with pytest.raises(nf4.QuantizationError, match="NF4Tensor"):
        nf4.nf4_dequantize(torch.zeros(3))


def test_fp4_and_int4_code_books_and_roundtrip_equal_bitsandbytes():
    assert torch.equal(nf4.fp4_code_book(), BF.get_4bit_type("fp4", device="cpu").unique())
    assert torch.equal(nf4.int4_code_book() * 7, torch.arange(-7.0, 8.0))  # bitsandbytes' own "int4" table fails to build in 0.50.2
    w = torch.randn(64 * 50)
    for kind, code in (("fp4", nf4.fp4_code_book()), ("nf4", nf4.nf4_code_book())):
        packed, state = BF.quantize_4bit(w, blocksize=64, quant_type=kind)
        assert torch.equal(nf4.roundtrip(w, code), BF.dequantize_4bit(packed, state).reshape(-1))
