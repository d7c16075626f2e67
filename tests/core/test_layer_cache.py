"""lora_edu.core.layer_cache: a step on cached lower-layer outputs equals the uncached step (loss and gradients)."""
import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from lora_edu.core import layer_cache
from lora_edu.core.lora import add_lora, lora_layers


def tiny_llama(layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def batch(rows: int = 3, width: int = 11, seed: int = 1) -> dict:
    """Right-padded rows of different lengths; the last few real tokens of each carry labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (rows, width), generator=g)
    lengths = [width - 3 * i for i in range(rows)]
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    labels = torch.full_like(ids, layer_cache.IGNORE)
    for i, n in enumerate(lengths):
        labels[i, n - 4:n] = ids[i, n - 4:n]
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}


def test_reply_loss_uncached_is_transformers_loss():
    model, b = tiny_llama(), batch()
    with torch.no_grad():
        ours = layer_cache.reply_loss(model, b["labels"], b["attention_mask"], input_ids=b["input_ids"])
        torch.testing.assert_close(ours, model(**b).loss)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_cached_loss_and_gradients_equal_the_uncached_ones(k):
    b = batch()
    plain = add_lora(tiny_llama(), r"model\.layers\.\d+\.self_attn\.(q|v)_proj", r=4, alpha=8)
    with torch.no_grad():   # a non-zero B, so that every adapter parameter gets a gradient
        for layer in lora_layers(plain).values():
            layer.lora_B.normal_()
    cached = copy.deepcopy(plain)
    loss_plain = layer_cache.reply_loss(plain, b["labels"], b["attention_mask"], input_ids=b["input_ids"])
    hidden = layer_cache.lower_outputs(cached, k, b["input_ids"], b["attention_mask"])
    assert hidden.shape == (*b["input_ids"].shape, 32) and not hidden.requires_grad
    loss_cached = layer_cache.reply_loss(cached, b["labels"], b["attention_mask"], hidden=hidden, k=k)
    torch.testing.assert_close(loss_cached, loss_plain, rtol=0, atol=1e-6)
    loss_plain.backward()
    loss_cached.backward()
    grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    top = [f"model.layers.{i}." for i in range(4 - k, 4)]
    for name, p in cached.named_parameters():
        if any(name.startswith(t) for t in top) and "lora_" in name:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-5, atol=1e-6)
        else:
            assert p.grad is None, f"{name} below the top {k} layers got a gradient through the cache"


def test_a_batch_of_cached_rows_is_cut_to_its_longest_row():
    model, b = tiny_llama(), batch(rows=3)
    hidden = layer_cache.lower_outputs(model, 2, b["input_ids"], b["attention_mask"])
    with torch.no_grad():
        rows = torch.tensor([2, 1])   # the two shorter rows: their cached states carry padding at the end
        cached = layer_cache.reply_loss(model, b["labels"][rows], b["attention_mask"][rows], hidden=hidden[rows], k=2)
        short = int(b["attention_mask"][rows].sum(1).max())
        plain = layer_cache.reply_loss(model, b["labels"][rows, :short], b["attention_mask"][rows, :short],
                                       input_ids=b["input_ids"][rows, :short])
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-6)


def test_top_layers_only_puts_every_layer_back():
    model = tiny_llama()
    layers = list(model.model.layers)
    with layer_cache.top_layers_only(model, 1):
        assert list(model.model.layers) == layers[-1:]
    assert list(model.model.layers) == layers
    with pytest.raises(RuntimeError), layer_cache.top_layers_only(model, 2):
        raise RuntimeError("an error inside")
    assert list(model.model.layers) == layers


def test_works_through_peft():
    from peft import LoraConfig, get_peft_model

    b = batch()
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[3]))
    assert layer_cache.check_cache_matches(model, 1, b) <= 1e-6


def test_bad_input_names_the_fix():
    model, b = tiny_llama(), batch()
    for k in (0, 5, 1.5, True):
        with pytest.raises(layer_cache.CacheError, match="int from 1 to 4"):
            layer_cache.lower_outputs(model, k, b["input_ids"], b["attention_mask"])
    with pytest.raises(layer_cache.CacheError, match="either input_ids .* or hidden with k"):
        layer_cache.reply_loss(model, b["labels"], b["attention_mask"])
    with pytest.raises(layer_cache.CacheError, match="no token carries a label"):
        layer_cache.reply_loss(model, torch.full_like(b["labels"], -100), b["attention_mask"], input_ids=b["input_ids"])
    with pytest.raises(layer_cache.CacheError, match="could not find the decoder"):
        layer_cache.decoder_layers(torch.nn.Linear(2, 2))


class _Rescaling(LlamaModel):
    """A decoder that changes its inputs inside forward (scales them), as some architectures do."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return super().forward(inputs_embeds=2.0 * inputs_embeds, **kwargs)


def test_a_model_that_changes_its_inputs_is_refused():
    model = tiny_llama()
    rescaling = _Rescaling(model.config)
    rescaling.load_state_dict(model.model.state_dict())
    model.model = rescaling.eval()
    with pytest.raises(layer_cache.CacheError, match="changes its inputs inside forward. Train without the cache"):
        layer_cache.check_cache_matches(model, 1, batch())


# The shared prefix computed once (PrefixCache): equal to the cached step on whole rows within float32 rounding, the
# same sums added in other shapes. The tolerance is relative, on the norm of each tensor: 1e-6 for the loss and the
# hidden states, 2e-5 for each gradient. Why 2e-5: the gradients of k_proj's adapter are small differences of large
# terms, and the cached step itself is up to 1e-5 from the same step in float64 on this model (both paths are).
RTOL, RTOL_GRAD = 1e-6, 2e-5


def prefixed_batch(prefix: int = 5, rows: int = 4, seed: int = 2) -> dict:
    """Right-padded rows that begin with the same ``prefix`` tokens; the last three real tokens of each carry labels."""
    g = torch.Generator().manual_seed(seed)
    lengths = [14, 12, 11, 10, 9][:rows]
    ids = torch.randint(3, 97, (rows, 14), generator=g)
    ids[:, :prefix] = torch.arange(10, 10 + prefix)
    mask = torch.tensor([[1] * n + [0] * (14 - n) for n in lengths])
    labels = torch.full_like(ids, layer_cache.IGNORE)
    for i, n in enumerate(lengths):
        labels[i, n - 3:n] = ids[i, n - 3:n]
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}


def close(ours: torch.Tensor, reference: torch.Tensor, rtol: float = RTOL) -> bool:
    """Equal within float32 rounding: the difference's norm at most ``rtol`` of the reference's."""
    return float((ours - reference).norm()) <= rtol * float(reference.norm())


@pytest.mark.parametrize("k, attention", [(1, "sdpa"), (2, "sdpa"), (4, "sdpa"), (2, "eager")])
def test_the_shared_prefix_gives_the_cached_loss_and_gradients(k, attention):
    b, prefix = prefixed_batch(), torch.arange(10, 15)
    model = add_lora(tiny_llama(), r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj", r=4, alpha=8)
    model.config._attn_implementation = attention
    with torch.no_grad():   # a non-zero B, so that every adapter parameter gets a gradient
        for layer in lora_layers(model).values():
            layer.lora_B.normal_()
    shared = copy.deepcopy(model)
    hidden = layer_cache.lower_outputs(model, k, b["input_ids"], b["attention_mask"])
    loss = layer_cache.reply_loss(model, b["labels"], b["attention_mask"], hidden=hidden, k=k)
    cache = layer_cache.PrefixCache(shared, k, b, prefix, chunk=3)
    assert cache.prefix_hidden.shape == (1, 5, 32) and cache.hidden.shape == (4, 9, 32) and len(cache) == 4
    real = b["attention_mask"][:, 5:].bool()
    assert close(cache.hidden[real], hidden[:, 5:][real]) and close(cache.prefix_hidden[0], hidden[0, :5])
    loss_shared = cache.loss(shared)
    assert close(loss_shared, loss)
    loss.backward()
    loss_shared.backward()
    grads = dict(model.named_parameters())
    top = [f"model.layers.{i}." for i in range(4 - k, 4)]
    for name, p in shared.named_parameters():
        if any(name.startswith(t) for t in top) and "lora_" in name:
            assert close(p.grad, grads[name].grad, RTOL_GRAD), name
        else:
            assert p.grad is None, f"{name} below the top {k} layers got a gradient through the cache"


def test_the_shared_prefix_gives_the_final_states_of_selected_rows():
    model, b, prefix = tiny_llama(), prefixed_batch(rows=5), torch.arange(10, 15)
    cache = layer_cache.PrefixCache(model, 2, b, prefix)
    hidden = layer_cache.lower_outputs(model, 2, b["input_ids"], b["attention_mask"])
    rows = [4, 1]
    part = cache.select(rows)
    with torch.no_grad():
        states = part.final_states(model)
        plain = layer_cache.final_states(model, b["attention_mask"][rows], hidden=hidden[rows], k=2)
        assert close(part.loss(model), layer_cache.reply_loss(model, b["labels"][rows], b["attention_mask"][rows],
                                                              hidden=hidden[rows], k=2))
    real = part.batch["attention_mask"][:, :states.shape[1]].bool()
    assert len(part) == 2 and part.prefix_hidden is cache.prefix_hidden
    assert states.shape[1] == int(real.sum(1).max()) and close(states[real], plain[:, 5:5 + states.shape[1]][real])


def test_the_shared_prefix_refuses_bad_rows_and_names_the_fix():
    model, b, prefix = tiny_llama(), prefixed_batch(), torch.arange(10, 15)
    other = {key: value.clone() for key, value in b.items()}
    other["input_ids"][2, 4] = 3
    with pytest.raises(layer_cache.CacheError, match=r"rows \[2\] do not begin with the shared prefix's 5 tokens.*end the prefix"):
        layer_cache.PrefixCache(model, 2, other, prefix)
    other = {key: value.clone() for key, value in b.items()}
    other["labels"][1, 5] = 7
    with pytest.raises(layer_cache.CacheError, match="a label falls on the shared prefix or on the token right after it"):
        layer_cache.split_prefix(other, prefix)
    with pytest.raises(layer_cache.CacheError, match="at least one, and fewer than a row"):
        layer_cache.split_prefix(b, prefix[:0])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(layer_cache.CacheError, match="supports the 'sdpa' and 'eager' attention implementations"):
        layer_cache.PrefixCache(model, 2, b, prefix)


class _Words:
    """A tokenizer that joins ':' and a following 'x' into one token, so that a prefix ending in ':' is unstable."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) if c != "\\0" else 999 for c in text.replace(":x", "\\0")]}


def test_prefix_tokens_checks_the_text_and_the_token_boundary():
    assert layer_cache.prefix_tokens(_Words(), "Q:", ["Q:a", "Q:b"]).tolist() == [ord("Q"), ord(":")]
    with pytest.raises(layer_cache.CacheError, match="'R:a' does not begin with the shared prefix 'Q:'"):
        layer_cache.prefix_tokens(_Words(), "Q:", ["Q:a", "R:a"])
    with pytest.raises(layer_cache.CacheError, match="tokenizes differently inside the prompt 'Q:xy'.*end the prefix where"):
        layer_cache.prefix_tokens(_Words(), "Q:", ["Q:a", "Q:xy"])


def test_the_shared_prefix_refuses_layers_that_bypass_the_keys_and_values():
    model, b = tiny_llama(), prefixed_batch()
    for layer in model.model.layers:   # an attention that ignores past_key_values (as older transformers' names did)
        forward = layer.self_attn.forward
        layer.self_attn.forward = lambda *args, past_key_values=None, _f=forward, **kw: _f(*args, **kw)
    with pytest.raises(layer_cache.CacheError, match="did not pass their keys and values to past_key_values.update"):
        layer_cache.PrefixCache(model, 2, b, torch.arange(10, 15))
