"""Numbers typed in a notebook's prose must equal what the code computes.

Most numbers a notebook shows are printed by code (and pinned by nbval). Where prose repeats one
(a summary, a sentence that reads a chart), the test below recomputes it and looks for it.
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from lora_edu import memory, memory_views
from lora_edu.core.memory import GB, GiB

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def prose(name: str) -> str:
    nb = json.loads((NOTEBOOKS / name).read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def printed(nb: dict, sep: str = "\n") -> str:
    """The text a notebook's code cells printed (stream outputs), in order: what a reader sees beside the prose."""
    return sep.join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])


def code_of(nb: dict, sep: str = "\n") -> str:
    """The source of a notebook's code cells, in order."""
    return sep.join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def main_line_words(name: str) -> int:
    """Words of a notebook's main line: markdown before the first "## Deep dive (optional):" heading, References excluded.

    The course's own counter (``lora_edu.course.course_map.main_line_words``) is used where it exists.
    """
    try:
        from lora_edu.course.course_map import main_line_words as counter
    except ImportError:
        counter = None
    if counter is not None:
        return counter(NOTEBOOKS / name)
    words = 0
    for cell in json.loads((NOTEBOOKS / name).read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        if "## Deep dive (optional):" in text:
            return words + len(text.split("## Deep dive (optional):")[0].split())
        words += len(text.split("## References")[0].split())
    return words


def test_01_memory_cost():
    raw = prose("01_memory_cost.ipynb")
    text = raw.replace("\n", " ")
    flat = " ".join(raw.split())
    n = memory.parameter_counts("llama-7b")
    lora = memory.lora_parameter_count("llama-7b", 8, ["q_proj", "v_proj"])
    nominal = 7 * 10**9
    assert f"{2 * nominal // GB} + {2 * nominal // GB} + {8 * nominal // GB} = {12 * nominal // GB} GB" in text
    assert "2 + 2 + 8 + 4 = 16 bytes" in text
    assert f"{n['total']:,} parameters, {n['linear_in_blocks'] / n['total']:.0%}" in text
    # The main line counts LLaMA-7B from its sizes in its own code: the sizes are the calculator's preset, and so the count.
    a = memory.resolve_arch("llama-7b")
    nb = json.loads((NOTEBOOKS / "01_memory_cost.ipynb").read_text())
    code = code_of(nb)
    assert f"h, mlp, layers, vocab = {a.hidden_size}, {a.intermediate_size}, {a.num_hidden_layers}, {a.vocab_size}\n" in code
    assert f"hidden size {a.hidden_size}, MLP size {a.intermediate_size}, {a.num_hidden_layers} layers and a {a.vocab_size:,}-token vocabulary" in flat
    assert f"LLaMA-7B: {n['total']:,} parameters" in json.dumps(nb)
    assert f"adds {lora:,} trainable ones ({100 * lora / (n['total'] + lora):.4f}% of all)" in text
    assert f"only {lora / 1e6:.0f} M parameters" in text
    # Round 6: the 70B claim is read off the figure (its inference bar, the bf16 weights alone, over the 80 GB line).
    assert memory.parameter_counts("llama-2-70b")["total"] * 2 > memory.usable_memory("80 GB")
    assert "A 70B model's frozen weights alone overfill an 80 GB card" in flat
    R = memory.RECIPES
    full = dict(R["full fine-tuning"], batch_size=1, seq_len=512)
    lora7 = memory.estimate("llama-7b", **R["LoRA"], batch_size=1, seq_len=512)
    card80, card48, card24 = (memory.usable_memory(c) for c in ("80 GB", "48 GB", "24 GB"))
    # Issue 25, item 2, and review 01 round 2: torch.optim.AdamW keeps its moments in the weights' dtype (it refuses
    # fp32 moments beside bf16 weights), so what the optimizer keeps decides the verdict for LLaMA-7B on an 80 GB card.
    impls = [memory.estimate("llama-7b", adamw_impl=i, **full) for i in memory.ADAMW_IMPLS]
    assert all(e.peak <= card80 and e.peak_at == "optimizer step" and e.rule_of_thumb == 8 * n["total"] for e in impls)
    bnb = memory.estimate("llama-7b", optimizer="paged_adamw_32bit", **full)
    master = memory.estimate("llama-7b", master_weights=True, **full)
    assert bnb.rule_of_thumb == 12 * n["total"] and master.rule_of_thumb == 16 * n["total"] and bnb.peak <= card80 < master.peak
    with pytest.raises(ValueError, match="refuses to step them"):
        memory.estimate("llama-7b", optimizer_dtype="fp32", **full)
    assert "**What the optimizer keeps decides whether full fine-tuning of LLaMA-7B fits one 80 GB card**" in flat
    assert "with bf16 weights that is 8 bytes a parameter, and it fits in each of its three implementations" in flat
    assert "(`foreach`)" in flat and "(`foreach=False`) and `fused=True`" in flat
    assert "fp32 moments (12 bytes)" in flat and "bitsandbytes' 32-bit AdamW, and still fit" in flat
    assert "an fp32 master copy of the weights (16 bytes, second deep dive) does not" in flat
    assert "Which AdamW you run decides" not in flat and "no 80 GB card holds that" not in flat
    # Item 1: the peak is the optimizer step, after the activations are freed; the 780 GB is one layout's count.
    n65 = memory.parameter_counts("llama-65b")["total"]
    assert 12 * n65 > 780 * GB and f"{n65 / 1e9:.1f} B parameters: {12 * n65 / GB:.1f} GB" in flat
    steps65 = [memory.estimate("llama-65b", **full, **kw) for kw in ({}, dict(optimizer="paged_adamw_32bit"),
                                                                      dict(master_weights=True))]
    assert all(e.peak_at == "optimizer step" and e.at_peak["activations"] == 0 for e in steps65)
    assert steps65[0].peak < 780 * GB < steps65[1].peak < steps65[2].peak
    assert "PyTorch's own AdamW on bf16 weights stays under 780 GB, an fp32 master copy goes far over" in flat
    assert "the paper's §1 states the number without its count" in flat
    assert "activations at 1 × 512 and the AdamW step's temporary" not in flat
    # Item 24 (round 1): LoRA at batch 1 × 512 fits a 24 GB card.
    assert f"needs {lora7.peak / GB:.1f} GB = {lora7.peak / GiB:.1f} GiB at its peak" in flat and "a 24 GB card holds it" in text
    assert lora7.peak <= card24
    # Items 3-4: the 65B run from the paper's own code and script (r = 64, bf16, 16 + 512 tokens), batch 1 and 4.
    paper = R["QLoRA, paper's code"]
    assert (paper["lora_r"], paper["lora_dropout"], paper["qlora_recipe"], paper["optimizer"]) == (64, 0.05, "paper", "paged_adamw_32bit")
    # The script's OASST1 rows have no source text: the start token and at most 512 target tokens (qlora.py l. 457, 623).
    b1, b4 = (memory.estimate("llama-65b", **paper, batch_size=b, seq_len=1 + 512) for b in (1, 4))
    assert "the start token and at most 512 target tokens [16]" in flat and "the headline's 513" in flat   # moved with the headline into a deep dive
    assert b1.peak < card48 and "At the script's final batch of 1 the peak leaves room on a 48 GB card" in flat
    assert card48 < b4.peak < 1.02 * card48 and "it goes just past the card's usable memory" in flat
    assert "the paper states none" not in flat and "The paper does not derive" not in flat
    assert "`prepare_model_for_kbit_training` [12] casts embedding and head to fp32" in flat and "casts them back to bf16" in flat
    # Item 5: one definition of QLoRA, named in the figure.
    assert R["QLoRA"]["lora_r"] == 16 and R["QLoRA"]["lora_targets"] == memory.LINEAR_MODULES
    assert memory.MEASURED_CASES["qlora_dq"] == dict(R["QLoRA"], weight_dtype="bf16")
    # Item 6: cards by their usable memory (le.memory.CARDS), in every verdict.
    assert "`le.memory.CARDS`" in flat and "81,559 MiB" in flat and "saw 81,079 MiB" in flat
    assert "another H100, under driver 565.57.01, saw 81,106 MiB [18]" in flat
    assert round(memory.CARDS["80 GB"].total / 2**20) == 81_079                 # CUDA's total, as PyTorch saw it on round 2's card
    # Round 2 measured (issue 25): the three AdamW steps on LLaMA-7B, the QLoRA recipes, the card; nothing left "modelled".
    round2 = memory_views.load_measurements("memory_measurements_round2.json")
    assert len(round2["runs"]) == 108 and not any(r.get("error") or r.get("oom") for r in round2["runs"])
    assert max(r["resident_before"] for r in round2["runs"]) <= 1024 and "at most 1 KiB of GPU memory" in flat
    steps = {r["case"]: r["peak_step"] for r in round2["runs"] if r["model"] == "llama-7b" and r["case"].startswith("full")}
    assert 11.5 * 2**30 < steps["full_bf16"] - max(steps["full_bf16_forloop"], steps["full_bf16_fused"]) < 12.6 * 2**30
    assert "foreach's step needs about 12 GiB more than" in flat and "the two recipes were measured side by side" in flat
    assert "modelled, not measured" not in flat and "awaits a GPU" not in flat
    # Item 7: the 32k vocabulary cited where it is stated.
    assert '"We use the same tokenizer as Llama 1 [...] The total vocabulary size is 32k tokens"' in flat
    assert "arXiv:2307.09288, Section 2.2, *Tokenizer*" in flat
    assert "The LLaMA paper states no vocabulary size" in flat
    # The script's two versions, cited by commit.
    assert "0b46ca8" in flat and "86ac601" in flat and "(lines 396-405)" in flat
    # Round 1's pins that still hold.
    assert "folk figure" in text and "The Transformers guide [3] counts 18" in flat
    assert "arXiv:1910.02054" in text and "2Ψ + 2Ψ + 12Ψ = 16Ψ" in text and "ForCausalLMLoss" in text
    assert "they outweigh the 84 GB" in text and memory.estimate("llama-7b", batch_size=8, seq_len=4096).activations > 84 * GB
    assert f"{memory.CUBLAS_WORKSPACE // 2**20} MiB of cuBLAS workspace" in flat or "cuBLAS" not in flat
    assert "LoRA removes gradients and optimizer state, not activations\" is only half true" in text
    per = lambda **kw: memory.activation_bytes_per_token_layer("llama-7b", **kw)  # noqa: E731
    qv32, qv16, full_act = per(method="lora"), per(method="lora", adapter_dtype="bf16"), per(method="full")
    all32 = per(method="lora", lora_targets=memory.LINEAR_MODULES)
    assert "LoRA on q,v saves a little activation memory (more with bf16 adapters)" in text and qv16 < qv32 < full_act
    assert "with fp32 adapters keeps *more* than full fine-tuning" in text and all32 > full_act
    assert "## References" in text and "arXiv:2106.09685" in text and "autocast_adapter_dtype" in text
    assert "length.\n3. **The logits**" in raw or "3. **The logits**" in raw
    assert '"on a single 48GB GPU"' in flat and '"requires more than 780 GB of GPU memory"' in flat
    assert "arXiv:2305.14314, abstract and Section 1" in flat
    n8 = memory.parameter_counts("llama-3-8b")
    assert 4 * (n8["embedding"] + n8["lm_head"]) > 4 * GB and "embedding and head alone take more than 4 GB" in flat
    assert "python -m lora_edu.memory --model llama-3-8b --method qlora --gpu-gb 24" in flat
    # Predict-first: the 1 × 512 number is in the prose, the check computes 8 × 2048.
    big8 = memory.estimate("llama-7b", method="lora", batch_size=8, seq_len=2048)
    assert f"LoRA's activations for LLaMA-7B are {lora7.activations / GB:.3f} GB" in flat and "**batch 8 × 2048**" in flat
    assert abs(float(f"{lora7.activations / GB:.3f}") * 32 / (big8.activations / GB) - 1) < 1e-3
    # Issue 24, item 3: the main line first, the summary, then the deep dives, then the references.
    heads = [line for line in raw.splitlines() if line.startswith("## ")]
    summary = heads.index("## Summary")
    assert all(h.startswith("## Deep dive (optional):") for h in heads[summary + 1:-1]) and heads[-1] == "## References"
    assert not any(h.startswith("## Deep dive") for h in heads[:summary])
    main = raw.split("## Summary")[0]
    for detail in ("cuBLAS", "What LoRA does to the activations", "predicted against measured", "FSDP"):
        assert detail not in main, detail
    assert main_line_words("01_memory_cost.ipynb") <= 1400


def test_00_start_here():
    """The idea first (the layer, its ΔW, B at zero, the low-rank picture), one convention, the time method as computed.

    The convention's statement and the time method are in deep dives (issue 24: the main line first)."""
    text = " ".join(prose("00_start_here.ipynb").split())
    from lora_edu.course import course_map as cm
    from lora_edu.course import exercise_bank

    assert "**A = `lora_A` (r×in), applied first, random at start** and **B = `lora_B` (out×r), applied last, zero at start**" in text
    assert "row vector" not in text.split("## Deep dive")[0], "the main line of 00 does not explain the write-up's names"
    for name in ("00_start_here.ipynb", "03_gradient_step.ipynb"):   # "say it once, clearly" (was 18 and 16 times)
        said = len(re.findall(r"down-projection|up-projection|applied first|applied last", prose(name)))
        assert said <= 3, f"{name} names the roles {said} times"
    # the time method, as stated, is the one computed (words a minute, kinds' minutes)
    assert (f"read at {cm.WORDS_PER_MINUTE} words a minute ({cm.FIRST_CONTACT_WORDS_PER_MINUTE} in this notebook, where every "
            f"term is new), its code at {cm.CODE_LINES_PER_MINUTE} lines a minute, what the "
            f"code prints at {cm.OUTPUT_LINES_PER_MINUTE} lines a minute (a table of numbers at {cm.TABLE_LINES_PER_MINUTE}), "
            f"a minute a figure (half a minute more for each further panel), {cm.MINUTES_PER_WIDGET} minutes a widget") in text
    assert cm.MINUTES_PER_FIGURE == 1 and cm.MINUTES_PER_EXTRA_PANEL == 0.5 and "rounded up to the whole minute" in text
    assert cm.stated_minutes(16.01) == 17
    k = cm.KIND_MINUTES
    assert (f"({k['predict']} for a prediction, {k['formula']} for a short function, a bug hunt or a prediction that takes a "
            f"derivation, as Exercise 0 does; {k['capstone']} for the capstone, {k['build']} for building a layer, an injection "
            "or a training loop)") in " ".join(text.split())
    assert k["bug hunt"] == k["formula"] == k["predict by derivation"] and max(k.values()) == k["build"]
    assert cm.EXERCISE_KINDS["predict_trainable"] == "predict by derivation"
    assert "00–07 are the core path" in text and cm.CORE_PATH == tuple(f"{i:02d}" for i in range(8))
    # the picture: shares and accuracies are printed by code; the prose only reads them
    import torch

    from lora_edu import digits_task

    pretrained = digits_task.pretrained_model()
    rotated = digits_task.load_digits_task(rotate=True)
    full = digits_task.adapt(pretrained, rotated, "full", progress=False)
    delta = (full["model"].fc2.weight - pretrained.fc2.weight).detach()
    torch.manual_seed(1)
    for _draw in range(3):   # "at every marked rank ΔW keeps far more than the random matrix", for any draw
        noise = torch.randn_like(delta)
        noise *= delta.norm() / noise.norm()
        kept, kept_noise = digits_task.kept_share(delta), digits_task.kept_share(noise)
        assert all(kept[r - 1] > 2 * kept_noise[r - 1] for r in (1, 2, 4, 8)) and all(kept[r - 1] > kept_noise[r - 1] + 0.3
                                                                                      for r in (16, 32))
    assert "at every marked rank ΔW keeps far more than the random matrix" in text   # the figure marks 1, 2, … 32
    lora = digits_task.adapt(pretrained, rotated, "lora", r=4, progress=False)
    before = digits_task.accuracy(pretrained, rotated.x_test, rotated.y_test)
    assert lora["trainable"] == 1792 and ("LoRA at rank 4 (its own rank-4 update, not ΔW's top four pieces), training 1,792 numbers, "
                                          f"reached {lora['accuracy']:.1%} on held-out rotated digits: full fine-tuning "
                                          f"{full['accuracy']:.1%}, the pretrained network {before:.1%}") in text
    assert "Once installed, the course runs entirely on a laptop CPU" in text
    assert "## References" in text and "arXiv:2106.09685" in text and "§4.1" in text
    assert "zeros `lora_embedding_A`" in text and "PiSSA, OLoRA or LoftQ zero neither" in text
    from lora_edu.course.exercises import CPU_SECONDS
    assert f"The limit is {CPU_SECONDS:g} s of CPU time per call" in text  # what the grader and the check use
    # the hints of 00, 02 and 03 speak PEFT's names only
    assert "A = lora_A is r×k (r×in) and B = lora_B is d×r (out×r)" in exercise_bank.lora_param_count()._hint
    for ex in (exercise_bank.delta_w(), exercise_bank.grad_b(), exercise_bank.one_step()):
        assert "PEFT's names: W is out×in, A (lora_A) is r×in, B (lora_B) is out×r" in ex._hint
        assert "row vector" not in ex._hint.lower() and "k×r" not in ex._hint


def test_02_worked_example():
    text = prose("02_worked_example.ipynb").replace("\n", " ")
    from lora_edu import worked_example as we

    ex = we.example()
    s = we.gradient_step(**ex)
    assert f"y = [{', '.join(f'{v:g}' for v in s['y'].ravel())}]".replace("-", "−") in text
    assert f"L ≈ {s['loss_before']:g}" in text
    assert "with r = 2 LoRA saves nothing at 4×4" in text and 2 * (4 + 4) == 4 * 4
    assert f"layer at r = 8 trains {8 * (4096 + 4096) / 4096**2:.2%} of W's numbers" in " ".join(text.split())
    assert "the repository does not record its title or author" in " ".join(text.split())
    # the translation box: the write-up's names appear there (and in the summary's one line, and the references) only
    box = text.split("## The example, and its one translation")[1].split("## ΔW, the effective weight")[0]
    box = " ".join(re.sub(r"(^|\s)> ?", " ", box).split())
    assert "**Translation box: the only place in the course that uses another write-up's names.**" in box
    assert "**W = its Wᵀ, A = `lora_A` = its Bᵀ, B = `lora_B` = its Aᵀ**" in box and "Its row vector x·W_eff is W_effᵀ·x" in box
    recap = "The write-up translates once: its B is `lora_A`ᵀ, its A is `lora_B`ᵀ"
    rest = " ".join(text.split("## ΔW, the effective weight")[1].split("## References")[0].split())
    assert recap in rest
    for writeup_name in ("row vector", "k×r", "r×d", "k×d", "x·W_eff", "its B", "its A"):
        assert writeup_name not in rest.replace(recap, ""), writeup_name
    assert we.TRANSLATION["B (k×r, applied first)"][0].startswith("A = lora_A") and we.TRANSLATION["A (r×d, applied last)"][0].startswith("B = lora_B")
    assert "## References" in text and "arXiv:2106.09685" in text


def test_03_gradient_step():
    text = " ".join(prose("03_gradient_step.ipynb").split())
    main = text.split("## Deep dive")[0]
    from lora_edu import worked_example as we

    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    start = "".join(json.loads((NOTEBOOKS / "03_gradient_step.ipynb").read_text())["cells"][0]["source"])
    assert "A = `lora_A` (r×in), B = `lora_B` (out×r)" in start
    assert "**B = `lora_B` = 0**" in main and "## Why B starts at zero" in main
    assert "B·A = 0 does not need" not in text and "ΔW = 0 needs no zero matrix at all for r ≥ 2" in text
    # the first step from PEFT's start: ∇A = 0, B moves first; the other way round A moves first
    A0, B0 = we.lora_init(4, 4, 2)
    assert we.zero_gradient(x, W, A0, B0, t) == ["A"] and "∇A = 0 on the first step, so B moves first" in main
    A1, B1 = we.lora_init(4, 4, 2, zero="A")
    assert we.zero_gradient(x, W, A1, B1, t) == ["B"] and "Zeroing A also gives B·A = 0, but then A moves first" in main
    # errata, in PEFT's names: the printed W_eff,new fits A updated with the printed ∇A (15 of 16), not the old A (14)
    src = we.printed_in_peft_names()
    fit = {name: 16 - len(we.errata({"W_eff_new": src["W_eff_new"]}, {"W_eff_new": W + src["B_new"] @ Au}))
           for name, Au in (("updated", ex["A"] - 0.1 * src["grad_A"]), ("old", ex["A"]))}
    assert fit == {"updated": 15, "old": 14}
    assert "fits A *updated* with that wrong ∇A best" in text and "not from a skipped update" in text
    assert abs(src["W_eff_new"][1, 3] - (W + src["B_new"] @ (ex["A"] - 0.1 * src["grad_A"]))[1, 3]) < 0.01
    assert "its one miss, [1, 3], is within 0.01 of the printed value" in text
    assert np.allclose(we.swapped_grad_A(x, ex["B"], src["grad_B"][:, :1]), src["grad_A"])  # "x and the error swapped"
    assert "swapped the roles of x and the error" in text and "it prints no update of its B" in text
    assert src["grad_B"][1, 0] == 0.2 and we.gradient_step(**ex)["y"][1, 0] == pytest.approx(0.2)  # "used y₁ instead of the error"
    # the 4×4 reason B = 0 ends lower: true for many seeds, not only the one plotted
    assert all(we.train(x, W, *we.lora_init(4, 4, 2, zero="B", seed=sd), t, steps=40)[-1]
               < we.train(x, W, *we.lora_init(4, 4, 2, zero="A", seed=sd), t, steps=40)[-1] for sd in range(10))
    assert "That is this one-example problem, not a width effect" in text
    # the √s rule at every step; "α acts like the learning rate" only on the first step (deep dive)
    for opt, lr in (("adam", 0.01), ("sgd", 0.1)):
        A_, B_, lr1 = we.equivalent_at_scale_one(A0, B0, 2.0, opt, lr)
        assert np.abs(we.trajectory(x, W, A0, B0, t, 2.0, opt, lr) - we.trajectory(x, W, A_, B_, t, 1.0, opt, lr1)).max() < 1e-7
    drift = np.abs(we.trajectory(x, W, A0, B0, t, 2.0, "adam", 0.01) - we.trajectory(x, W, A0, B0, t, 1.0, "adam", 0.02)).max(axis=(1, 2))
    assert drift[0] < 1e-8 < 0.1 < drift[-1] and "On the **first step** from B = 0" in text and "After the first step the two runs drift apart" in text
    # review 00/02/03: the main line and summary say "like the learning rate" of the first step only, and the gradient checks' tolerance
    assert "On this first step under Adam, α acts like the learning rate" in main and "like s under Adam, where α then acts like" in main
    assert "claims this beyond the first step" in main   # the paper's claim, not this table's (round-8 review)
    assert "under Adam, α acts like the learning rate, so" not in text and "This is one reading of the paper's" in text
    ex_ = we.example()
    step_ = we.gradient_step(**ex_)
    gaps = we.gradient_gaps(ex_["x"], ex_["W"], ex_["A"], ex_["B"], ex_["y_true"], step_["grad_A"], step_["grad_B"])
    assert max(gaps.values()) < 1e-9 and "Autograd and finite differences agree with them to 1e-9" in text  # a deep dive
    # SGD: the first change of W_eff grows like s²; Adam: like s (from PEFT's start)
    sgd = [we.first_step_change(x, W, A0, B0, t, s, "sgd", 0.1) for s in (1, 2)]
    adam = [we.first_step_change(x, W, A0, B0, t, s, "adam", 0.01) for s in (1, 2)]
    assert sgd[1] / sgd[0] == pytest.approx(4) and adam[1] / adam[0] == pytest.approx(2)
    assert "On this first step under Adam, α acts like the learning rate: the change is proportional to their product" in main
    assert "grows like s² under SGD and like s under Adam" in text
    # Hayou et al.: their names are PEFT's
    assert "Their names are PEFT's: *Init[A]* is A random, B = 0 (PEFT's default)" in text and "internal instability" in text
    assert "Hayou, Ghosh and Yu (2024)" in text and "arXiv:2406.08447" in text
    # round 6: the main line gives the reason to prefer B = 0 (cited), and says the figure's gap is this problem's
    assert "Hayou, Ghosh and Yu (2024) find B = 0 performs better on average" in main
    assert "come from this one-example problem (deep dive *Two zero starts*)" in main
    # issue 24, round 3 of trimming (readers of rounds 6-7): the exercises name their start and their loss; the shape
    # checks, the errata pointer and the speaker notes are out of the main line, in deep dives
    assert "**Exercise 3a (predict first).** From PEFT's start (B = 0), double α" in main
    assert "y_true is out×n. The loss sums over the columns" in main
    assert "(out×in)·(in×r) is out×r, like B" in text.split("## Deep dive (optional): checking the gradients")[1]
    assert "Speaker notes" not in main and "write-up" not in main
    assert "**Speaker notes.** Before *Why B starts at zero*" in text.split("## Deep dive (optional): two zero starts")[1]
    assert "tuning α is roughly the same as tuning the learning rate" in text and "§4.1" in text
    assert text.rstrip().split("## References")[-1].count("arXiv:") >= 3


def test_05_lora_from_scratch():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook runs (le.seed_everything): tiny models on a busy 2-core machine
    try:
        _check_05()
    finally:
        torch.set_num_threads(threads)


def _check_05():
    import torch

    from lora_edu import LoRALinear, digits_task, rank_experiments, timing

    text = prose("05_lora_from_scratch.ipynb").replace("\n", " ")
    rotated = digits_task.load_digits_task(rotate=True)
    pretrained = digits_task.pretrained_model()
    runs = {r: digits_task.adapt(pretrained, rotated, "lora", r=r) for r in (1, 2, 4, 8, 16)}
    full = digits_task.adapt(pretrained, rotated, "full")
    assert "full fine-tuning reaches the highest accuracy" in text
    assert full["accuracy"] > max(run["accuracy"] for run in runs.values())
    assert "gains little beyond r = 4" in text and runs[16]["accuracy"] - runs[4]["accuracy"] < 0.02
    assert "r = 1 and 2 are still climbing after 30 epochs" in text
    assert all(runs[r]["history"][-1] > runs[r]["history"][-10] for r in (1, 2))
    delta = (full["model"].fc2.weight - pretrained.fc2.weight).detach()
    sv = torch.linalg.svdvals(delta)
    energy = (sv**2).cumsum(0) / (sv**2).sum()
    assert "far from random" in text and "not *very* low-rank" in text and 0.3 < energy[3] < 0.8

    # initialisation: B (applied last) is zero, so at the first step only B gets a gradient
    assert "only B gets a gradient" in text and "Hu et al. 2021, §4.1" in text
    layer = LoRALinear(torch.nn.Linear(6, 4), r=2, alpha=4)
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.lora_A.grad.abs().max() == 0 and layer.lora_B.grad.abs().max() > 0

    # where LoRA saves time: the weight-gradient matmul is one of a layer's three equal matmuls
    assert "LoRA skips the third matmul, a third of the layer's training FLOPs" in text
    b, d, L, r = 128, 1024, 4, 8
    f_full, f_lora = timing.linear_training_flops(b, d, L), timing.linear_training_flops(b, d, L, r=r)
    saving = 1 - sum(f_lora.values()) / sum(f_full.values())
    assert "the saving over the whole stack is above a third" in text and 1 / 3 < saving < 0.36
    assert "expect less than a third" in text and 0.20 < 1 - 32.5 / 43.1 < 1 / 3  # the paper's 25% (footnote 5)
    # measured: LoRA's backward and (relatively more) its Adam step are faster. Interleaved medians, small copies.
    assert "LoRA's backward pass and, even more, its Adam step take less time" in text
    # The claim is about the times the notebook shows: read them from its stored output (re-timing here
    # would make this test fail on a busy machine; nbval re-runs the cell, and `make bench` times the course).
    nb = json.loads((NOTEBOOKS / "05_lora_from_scratch.ipynb").read_text())
    table = next("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" and "time_steps" in "".join(c["source"])
                 for o in c["outputs"] if "GFLOP" in "".join(o.get("text", "")))
    shown = {line.split("  ")[0]: [float(t) for t in re.findall(r"⏱ *([0-9.]+) ms", line)]
             for line in table.splitlines() if "⏱" in line}
    (_, full_bwd, full_step), (_, lora_bwd, lora_step) = shown["full fine-tuning"], shown[f"LoRA r={r}"]
    assert lora_bwd < full_bwd and lora_step / full_step < lora_bwd / full_bwd, shown

    # the cliff in the spectrum: dead units after fc1 give exact zero columns of ΔW_fc2
    dead = digits_task.dead_units(pretrained, rotated.x_train)["act1"] & digits_task.dead_units(full["model"], rotated.x_train)["act1"]
    _, zero_cols = digits_task.zero_lines(delta)
    rank = int((sv > sv[0] * 128 * torch.finfo(delta.dtype).eps).sum())
    assert torch.equal(zero_cols, dead) and "The cliff at index 101 is the dead units" in text and rank == 101 == 128 - int(dead.sum())

    # the truncated SVD of the full update is neither a ceiling nor a floor for LoRA
    def cut(r):
        return digits_task.accuracy(rank_experiments.truncate_update(full["model"], pretrained, r), rotated.x_test, rotated.y_test)

    # measured in notebook 04 (not repeated in 05, which refers back to it), on the same runs
    flat = " ".join(text.split())
    assert "found LoRA far ahead at r = 1 to 8" in flat
    assert all(runs[r]["accuracy"] - cut(r) > 0.05 for r in (1, 2, 4, 8))
    assert "truncate_update" not in code_of(nb, sep="")
    assert "## References" in text and "footnote 5" in text


def test_05_build_exercises():
    """The numbers the build exercises' prompts and the summary state are the ones the checks use."""
    import torch

    from lora_edu.course import build_exercises as bx
    from lora_edu.course import exercises, probes
    from lora_edu.grade import sandbox

    text = " ".join(prose("05_lora_from_scratch.ipynb").split())
    assert "to the task that `x_train` and `y_train` show, 400 labelled digits" in text and bx.CAPSTONE_EXAMPLES == 400
    assert "the adapters hold at most 2,048 numbers" in text and bx.CAPSTONE_BUDGET == 2048
    assert "right on at least 70% of held-out digits" in text and bx.CAPSTONE_ACCURACY == 0.70
    assert "Each case may use 5 s of CPU" in text and exercises.CPU_SECONDS == sandbox.DEFAULT_LIMITS.call_cpu_seconds == 5
    assert "the hidden one changes the digits another way" in text and bx.adapt_digits().hidden_cases == 1
    # the summary's 1,792: r = 4 on fc1 (64 → 128) and fc2 (128 → 128), the printed solution's choice
    assert "1,792 adapter numbers adapt the pretrained network" in text and 'r=4, alpha=8' in bx.SOLUTION_ADAPT_DIGITS
    assert 4 * (64 + 128) + 4 * (128 + 128) == 1792
    # 5b's example of PEFT's rule, on the check's own model
    assert '`"v_proj"` matches `blocks.0.attn.v_proj`, not `blocks.0.cross.kv_proj`' in text
    names = probes.linear_names(probes.toy_model([6, 6], True, 0))
    assert {"blocks.0.attn.v_proj", "blocks.0.cross.kv_proj"} <= set(names)
    model = bx.reference_add_lora(probes.toy_model([6, 6], True, 0), ["v_proj"], 2, 4.0, lambda base, r, alpha: torch.nn.Identity())
    assert isinstance(model.get_submodule("blocks.0.attn.v_proj"), torch.nn.Identity)
    assert isinstance(model.get_submodule("blocks.0.cross.kv_proj"), torch.nn.Linear)
    # 5a's init: Kaiming-uniform with a = √5 is uniform on ±1/√in (what the check tests)
    assert "(`nn.init.kaiming_uniform_(…, a=math.sqrt(5))`)" in text and "1/√fan_in at a = √5" in text
    a = torch.empty(64, 400)
    torch.nn.init.kaiming_uniform_(a, a=5 ** 0.5)
    assert a.abs().max() <= 1 / 20 and a.abs().max() > 0.99 / 20


def test_04_rank_and_alpha():
    text = " ".join(prose("04_rank_and_alpha.ipynb").split())
    from lora_edu import digits_task, lowrank
    from lora_edu import rank_experiments as rx
    from lora_edu.course.seeding import seed_everything

    assert "whose singular values decay as 0.75ⁱ" in text
    # review 04-06 round 2: exercise 4b asks for a learning rate; the fit's are stated (they were not)
    assert "(0.02 for plain gradient descent, 0.003 for Adam)" in text and rx.FIT_LR == {"sgd": 0.02, "adam": 0.003}
    # Eckart–Young is not a bound on LoRA: pinned by tests/core/test_rank_experiments.py
    assert "At the small ranks (r = 1 to 8) the trained LoRA is far better than the cut full update" in text
    assert "truncated SVD bounds" not in text.lower() and "bounds what any rank-r LoRA" not in text
    seed_everything(0)
    pretrained, rotated = digits_task.pretrained_model(), digits_task.load_digits_task(rotate=True)
    full_acc = digits_task.adapt(pretrained, rotated, "full")["accuracy"]
    assert f"comes close to full fine-tuning ({full_acc:.1%}, last line above)" in text
    lora1 = digits_task.adapt(pretrained, rotated, "lora", r=1)["accuracy"]
    assert f"r = 1 ({lora1:.1%}) is clearly too small" in text
    # plain GD: the winning rank depends on α (r = 1 at small α, r = 16 at α = 16); Adam: the largest, at every α
    sweep = rx.scaling_sweep(ranks=(1, 2, 4, 8, 16, 32, 64), alphas=(1, 16, 32, 64), rules=("alpha/r", "alpha/sqrt(r)"))
    assert "at small α the smallest rank wins and at α = 16 r = 16 wins" in text
    assert rx.best_rank(sweep["sgd"]["alpha/r"][1]) == 1 and rx.best_rank(sweep["sgd"]["alpha/r"][16]) == 16
    assert "at large α the smallest ranks diverge" in text and rx.diverged_runs(sweep["sgd"]["alpha/r"])[32] == [1]
    assert "the largest rank has the lowest loss at every α tried, under both α/r and α/√r" in text
    assert all(rx.best_rank(sweep["adam"][rule][a]) == 64 for rule in sweep["adam"] for a in sweep["adam"][rule])
    assert "α = 16 every rank ends within 0.002 of its Eckart–Young floor" in text
    assert "at α = 16 every rank ends within 0.002 of its Eckart–Young floor." in text  # the summary
    svd = lowrank.TruncatedSVD(rx.fit_target())
    assert all(abs(c[-1] - 0.5 * svd.relative_error(r) ** 2) < 2e-3 for r, c in sweep["adam"]["alpha/r"][16].items())
    assert "r = 64 is full rank for this 64×64 target, so its floor is 0" in text and svd.relative_error(64) < 1e-6
    # review 04-06 round 2: plain GD's 150 steps measure speed, not capacity (its losses stay far above the floors);
    # round 7: every rank ends above its floor (r = 1 too: it closed only ~60 % of its gap), the gap growing with r
    gaps = {r: c[-1] - 0.5 * svd.relative_error(r) ** 2 for r, c in sweep["sgd"]["alpha/r"][16].items()}
    assert (f"every rank ends above its floor, and the gap grows with r ({gaps[1]:.2f} at r = 1, {gaps[64]:.2f} at r = 64)"
            in text)
    assert all(g > 0.02 for g in gaps.values()) and all(a < b for a, b in zip(list(gaps.values()), list(gaps.values())[1:]))
    assert "plain gradient descent leaves most ranks far from their floor after 150 steps" in text
    assert "this fit measures *capacity*" not in text and "This notebook has only a test split" in text
    # the rsLoRA measurement (trend pinned in tests/core/test_rank_experiments.py)
    early = rx.early_update_sizes(pretrained, rotated, ranks=(1, 4, 16, 64), alpha=16, steps=10, optimizers=("adam",))
    adam = {rule: {r: v["update"] for r, v in by_r.items()} for rule, by_r in early["adam"].items()}
    assert f"from {adam['alpha/r'][1]:.3f} (r = 1) to {adam['alpha/r'][64]:.3f} (r = 64)" in text
    assert "With s = α/√r it stays within a factor of two from r = 1 to 64 under Adam (growing with r)" in text
    sq = list(adam["alpha/sqrt(r)"].values())
    assert max(sq) / min(sq) < 2 and all(a < b for a, b in zip(sq, sq[1:]))
    assert "α = 2r (s constant) it grows with r" in text
    assert "at r = 64 rsLoRA's s = 16/√64 = 2 as well" in text and rx.SCALE_RULES["alpha/sqrt(r)"](16, 64) == 2
    before = rx.loss_before_training(pretrained, rotated)
    assert "about one rotated digit in ten right" in text and round(before["accuracy"], 1) == 0.1
    assert "Why the losses are near 40" in text and 35 < before["loss"] < 45 and before["median_confidence"] > 0.999
    assert "α = 2r over-corrects" not in text and "plain-gradient-descent effect" not in text
    # Hu et al. Table 6 and footnote 6, as quoted (checked against arXiv:2106.09685 by hand)
    assert "WikiSQL 73.4% against 73.5%, MultiNLI 91.3% against 91.4%" in text and "(74.1% against 73.9%, 91.2% against 91.4%)" in text
    assert '"do not expect a small r to work for every task or dataset"' in text
    # no remarks about the course's own history
    assert "r = 16–32 for harder tasks" not in text and "The old" not in text and "old \"r = 16" not in text
    assert "## References" in text and "arXiv:2106.09685" in text and "arXiv:2312.03732" in text
    # the deep dive "accuracy, error and cost by rank" reads the table printed above it (nbval pins the table to the code)
    nb = json.loads((NOTEBOOKS / "04_rank_and_alpha.ipynb").read_text())
    table = next("".join(o["data"]["text/markdown"]) for c in nb["cells"] if "rank_choice_table" in "".join(c["source"])
                 for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))
    gains = re.findall(r"\| \+([\d.]+) points \|", table)
    assert f"Accuracy gains +{gains[0]} and +{gains[1]} points from r = 1 to 2 and 2 to 4, then less than one point" in text
    assert all(float(g) < 1 for g in gains[2:]) and table.rstrip().endswith("| 117% |") and "adapts (117%)" in text
    assert 64 * (64 + 128) + 64 * (128 + 128) > 64 * 128 + 128 * 128   # fc1 64→128, fc2 128→128 at r = 64


def test_06_peft_comparison_and_committed_benchmarks():
    text = " ".join(prose("06_peft_comparison.ipynb").split())
    from lora_edu.data import load_json

    results = {kind: load_json(f"bench_lora_linear_{kind}.json") for kind in ("gpu", "cpu")}
    rows = {kind: res["rows"] for kind, res in results.items()}
    assert "under 4% even at r = 64" in text and max(r["extra_flops_fraction"] for r in rows["gpu"]) < 0.04
    assert "much larger than that on the GPU" in text
    assert all(r["ratio_unmerged_over_linear"] - 1 > r["extra_flops_fraction"] for r in rows["gpu"])
    assert all(r["ratio_merged_over_linear"] < 1.07 for kind in rows for r in rows[kind])   # "within 7%", below
    # Issue 12, item 10: the cause is backed by an ablation, forward only; adapter dtypes are stated.
    forward = [r for kind in rows for r in rows[kind] if r["mode"] == "forward"]
    assert "in every forward case on both machines" in text and all(r["ratio_lora_edu_over_output_scaled"] < 1 for r in forward)
    assert "times within 3% of PEFT's" in text and all(abs(r["ratio_output_scaled_over_peft"] - 1) < 0.03 for r in forward)
    gpu_bwd = [r for r in rows["gpu"] if r["mode"] == "forward_backward"]
    assert "at 4096×4096 the ablated layer was *faster* than ours" in text
    assert all(r["ratio_lora_edu_over_output_scaled"] > 1 for r in gpu_bwd if r["d_out"] == 4096)
    assert "were much slower than bf16 adapters on the GPU" in text
    assert all(r["ratio_peft_fp32_adapters_over_peft"] > 1.2 for r in rows["gpu"])
    assert all(r["adapter_dtype"]["peft, fp32 adapters"] == "torch.float32" and r["adapter_dtype"]["peft"] == "torch.bfloat16"
               for r in rows["gpu"])
    assert all(set(r["adapter_dtype"].values()) == {"torch.float32"} for r in rows["cpu"])
    assert "no such extra work, was as slow as PEFT's in the forward pass" in text
    tiny = {k: next(o for o in res["per_call_overhead"] if o["mode"] == "forward")["median_us"] for k, res in results.items()}
    assert all(abs(t["lora_edu, output scaled"] - t["lora_edu"]) < 0.2 * (t["peft"] - t["lora_edu"]) for t in tiny.values())
    # Items 6, 7, 13 and the references.
    assert "**OLoRA** [4] starts them from a **QR decomposition**" in text and "top singular values and vectors (an SVD)" in text
    assert "not in PEFT's documentation" not in text and "alpaca-lora" in text and "seed of this course" not in text
    assert "needs a CUDA GPU" not in text and "bitsandbytes now ships CPU builds [8]" in text and "0.48.0 to 0.49.2" in text
    assert "freezes the residual W − (α/r)·B·A" in text and "trains the residual" not in text   # review item 1
    assert "borrows a GPU" not in text                                                          # item 19
    assert "with α = 2r (so α/r = 2)" in text                                                   # item 27
    assert "LoRA adds no FLOPs at inference; its measured time was within 7% of `nn.Linear`'s" in text  # item 23
    assert "costs nothing at inference" not in text
    for ref in ("arXiv:2106.09685", "arXiv:2305.14314", "arXiv:2404.02948", "arXiv:2406.01775", "autocast_adapter_dtype"):
        assert ref in text.split("## References")[1]


def test_review_0406_round2_equal_means_a_stated_tolerance():
    """Review 04-06 round 2: no "exactly equal" where only a tolerance was measured; the LLaMA-7B line as tutorials quote it."""
    from lora_edu.course import course_map

    assert "exactly equal" not in prose("05_lora_from_scratch.ipynb") and "equal to a stated tolerance" in prose("05_lora_from_scratch.ipynb")
    assert all("exactly equal" not in ch.teaches and "as fast" not in ch.teaches for ch in course_map.COURSE_MAP)
    text = " ".join(prose("06_peft_comparison.ipynb").split())
    lora, total = 32 * 2 * 8 * (4096 + 4096), 6_742_609_920   # q_proj and v_proj of 32 LLaMA-7B layers, r = 8
    assert f"`trainable params: {lora} || all params: {total} || trainable%: {100 * lora / total}`" in text
    code = "".join("".join(c["source"]) for c in json.loads((NOTEBOOKS / "06_peft_comparison.ipynb").read_text())["cells"])
    assert "torch_dtype" not in code
    # the LLaMA-7B printout's config: the calculator's preset sizes (memory.resolve_arch), the fact's one place
    a = memory.resolve_arch("llama-7b")
    assert (f"LlamaConfig(hidden_size={a.hidden_size}, intermediate_size={a.intermediate_size}, num_hidden_layers={a.num_hidden_layers}, "
            f"num_attention_heads={a.num_attention_heads},\n                      vocab_size={a.vocab_size}, tie_word_embeddings=False)") in code
    assert lora == memory.lora_parameter_count(a, 8, ["q_proj", "v_proj"]) and total == memory.parameter_counts(a)["total"] + lora


def test_06_pitfalls():
    """Issue 13, item 6: what the pitfalls' prose says about shapes, versions and the libraries' docstrings."""
    import inspect
    from importlib.metadata import version

    import peft
    from peft.tuners.lora import config as lora_config

    from lora_edu.lessons import pitfalls

    nb = json.loads((NOTEBOOKS / "06_peft_comparison.ipynb").read_text())
    text = " ".join(prose("06_peft_comparison.ipynb").split())
    outputs = printed(nb, sep=" ")
    shapes = {name: shape for name, _, shape in pitfalls.linear_modules(pitfalls.tiny_gpt2(), block=".h.0.")}
    d = pitfalls.TINY_GPT2["n_embd"]
    assert "(q, k and v in one layer: 64 in, 3·64 out)" in text and shapes["transformer.h.0.attn.c_attn"] == (d, 3 * d) == (64, 192)
    assert "GPT-2's attention `c_proj`, 64×64" in text and shapes["transformer.h.0.attn.c_proj"] == (64, 64)
    assert "PEFT 0.21 warns" in text and version("peft").startswith("0.21.")
    assert "5.23's `activation_checkpointing_enable`" in text and version("transformers").startswith("5.23.")
    code = code_of(nb, sep=" ")
    assert "(rank 2r:" in text and "converted adapter: r = 16" in outputs
    assert 'LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")' in code
    # the quotes are the installed libraries' own words
    squash = lambda s: " ".join(s.split())  # noqa: E731
    assert '"the adapter will be frozen and can only be used for inference"' in text
    assert "the adapter will be frozen and can only be used for inference" in squash(inspect.getsource(peft.PeftModel.from_pretrained))
    for quote in ("(if the model is a PreTrainedModel, the output layer excluded)",
                  "modules apart from adapter layers to be set as trainable and saved in the final checkpoint"):
        assert quote in text and quote in squash(inspect.getsource(lora_config)), quote
    assert "lm_head adapted: False" in outputs and "same logits: False" in outputs and "same logits: True" in outputs
    # pitfall 6: NF4 must be named (BitsAndBytesConfig's default 4-bit type is FP4)
    from transformers import BitsAndBytesConfig

    assert 'BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")' in text and 'the default type is `"fp4"`' in text
    assert BitsAndBytesConfig(load_in_4bit=True).bnb_4bit_quant_type == "fp4"
    assert 'bnb_4bit_quant_type="nf4"' in inspect.getsource(pitfalls.load_nf4)


def test_exercises_worth_doing_say_what_the_bank_checks():
    """Issue 13, item 3: the prompts of the predict, bug-hunt and open-task exercises state what their checks use."""
    from lora_edu import digits_task
    from lora_edu.course import exercise_bank as bank

    def cells(name):
        return ["".join(c["source"]) for c in json.loads((NOTEBOOKS / name).read_text())["cells"]]

    # 00, predict first: the layer sizes typed in the prompt are the MLP's
    text00 = " ".join(prose("00_start_here.ipynb").split())
    mlp = digits_task.MLP()
    sizes = {name: (getattr(mlp, name).in_features, getattr(mlp, name).out_features) for name in ("fc1", "fc2", "head")}
    assert sizes == {"fc1": (64, 128), "fc2": (128, 128), "head": (128, 10)}
    assert "`fc1` (64 → 128), `fc2` (128 → 128) and `head` (128 → 10)" in text00 and "r=4, alpha=8" in text00
    # ... and the LoRA it describes is the one notebook 00 trains (digits_task.adapt: alpha = 2r on fc1 and fc2)
    import inspect
    assert 'add_lora(model, list(targets), r=r, alpha=2 * r)' in inspect.getsource(digits_task.adapt)
    assert inspect.signature(digits_task.adapt).parameters["targets"].default == ("fc1", "fc2")
    # 02 and 05, bug hunts: the notebook shows exactly the bank's buggy code (the tests of the bank prove it fails)
    assert any(c.startswith(bank.BUGGY_TORCH_STYLE) for c in cells("02_worked_example.ipynb"))
    assert any(c.startswith(bank.BUGGY_MERGE) for c in cells("05_lora_from_scratch.ipynb"))
    # 03, predict first: asked before the cell that measures it
    c03 = cells("03_gradient_step.ipynb")
    asked = next(i for i, c in enumerate(c03) if "Exercise 3a (predict first)" in c)
    measured = next(i for i, c in enumerate(c03) if "le.worked_example.alpha_table(x, W, " in c)   # first_step_change per α
    assert asked < measured and not any("like s²" in c for c in c03[:asked])
    # 04, open task: the steps, tolerance, visible example and number of hidden cases the prompt names
    text04 = " ".join(prose("04_rank_and_alpha.ipynb").split())
    ex = bank.lora_plan()
    assert (bank.PLAN_STEPS, bank.PLAN_TOLERANCE, ex.hidden_cases) == (150, 0.01, 3)
    assert ex.example == dict(d=64, k=48, budget=1000)
    assert "with 150 Adam steps" in text04 and "within 0.01 of the best" in text04
    assert "(d = 64, k = 48, budget = 1,000) and 3 hidden cases" in text04


def test_09_paper_analyses():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook runs (le.seed_everything)
    try:
        _check_09()
    finally:
        torch.set_num_threads(threads)


def _peft_starts_nested() -> bool:
    """Does PEFT, from one seed, draw r = 8's lora_A as the first 8 rows of r = 64's (as this course's add_lora does)?"""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    def lora_a(r):
        torch.manual_seed(1)
        base = nn.Sequential()
        base.add_module("fc2", nn.Linear(128, 128))
        torch.manual_seed(0)
        return get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["fc2"])).base_model.model.fc2.lora_A["default"].weight

    return bool(torch.equal(lora_a(8), lora_a(64)[:8]))


def _check_09():
    import torch

    from lora_edu import data as stored_data
    from lora_edu import digits_task, subspace
    from lora_edu import paper_analyses as pa
    from lora_edu.course.seeding import seed_everything

    raw = prose("09_paper_analyses.ipynb")
    text = " ".join(raw.split())
    nb = json.loads((NOTEBOOKS / "09_paper_analyses.ipynb").read_text())
    code = code_of(nb)
    outputs = printed(nb)
    assert main_line_words("09_paper_analyses.ipynb") <= 1400
    seed_everything(0)
    upright, rotated = digits_task.load_digits_task(rotate=False), digits_task.load_digits_task(rotate=True)
    pretrained = digits_task.pretrained_model()
    shapes = pa.layer_shapes(pretrained)
    stored = stored_data.load_json("paper_analyses_study.json")
    study = pa.load_study(stored)
    E, LR = stored["epochs"], stored["lrs"][0]

    def st(t, r, e, key="history", lr=LR):
        return pa.over_seeds(study, t, r, lr, key, e)

    # the set-up (issue 25 item 16: seeds, and training long enough to say what the grid measures)
    assert (stored["seeds"], E, stored["lrs"]) == ([0, 1, 2], 300, [0.01, 0.001]) and "with 3 seeds" in text and "for 300 epochs" in text
    assert "450 held-out digits (one digit is 0.22 points)" in text and len(rotated.y_test) == 450 and f"{100 / 450:.2f}" == "0.22"
    assert "A 26,122-parameter MLP" in text and pa.trainable_count(pa.RunSpec(("full",)), shapes) == 26122
    assert "20 epochs do not finish training" in text and "section 3 trains four of them again, which must reproduce them" in text
    assert "every test accuracy equals the stored one: True" in outputs
    assert len(study) == 78 == 26 * 3 and f"stored: 78 runs = 26 settings × 3 seeds, {E} epochs each" in outputs
    # round-6 read-through: the main line's learning rate is stated, and printed
    assert "The main line trains both at learning rate 0.01." in text and f"the main line's learning rate: {LR:g}" in outputs and LR == 0.01
    # 1. the grid
    grid = [(t, r) for t in pa.GRID_ROWS for r in pa.GRID_RANKS]
    gaining = {(a, b): [c for c in grid if st(*c, b)[0] - st(*c, a)[0] >= 0.02] for a, b in ((15, 20), (200, E))}
    assert "After 20 epochs most cells were still gaining" in text and len(gaining[15, 20]) > len(grid) / 2
    assert "After 300 few are" in text and len(gaining[200, E]) <= 3
    wide = [st(t, r, E)[0] for t, r in grid if r >= 4 and t != ("head",)]
    assert "every set with `fc1` or `fc2` ends within a few points, the head alone lower" in text and max(wide) - min(wide) < 0.04
    assert all(st(("head",), r, E)[0] < min(wide) for r in (4, 16))
    assert "Rank 1 stays behind, far behind on a single layer" in text and all(st(t, 1, E)[0] < min(wide) for t in pa.GRID_ROWS)
    assert all(st(t, 1, E)[0] < min(wide) - 0.3 for t in pa.GRID_ROWS if len(t) == 1)
    h10, h16 = {e: st(("head",), 10, e) for e in (20, E)}, {e: st(("head",), 16, e) for e in (20, E)}
    assert "Yet after 20 epochs r = 16 leads with no overlap between the seeds' ranges. After 300 epochs it does not" in text
    assert h16[20][1] > h10[20][2] and not h16[E][1] > h10[E][2] and min(shapes["head"]) == 10
    assert "No LoRA cell reaches full fine-tuning" in text
    assert all(max(st(*c, e)[0] for c in grid) < st(("full",), None, e)[0] for e in (20, E))
    assert "Rank 1 was enough on GPT-3; on the rotated digits it is far from enough" in text
    assert "(73.4% against 73.5%" not in text and "r = 1 gives 73.4% on WikiSQL and 91.3% on MultiNLI, r = 64 gives 73.5% and 91.4%" in text
    assert "its footnote 6 (§7.2) warns that a small r is not expected to work for every task" in text.replace("Its footnote", "its footnote")
    assert ("Table 4 (§5.5) has full fine-tuning of GPT-3 175B at 73.8% on WikiSQL and 89.5% on MultiNLI-matched, LoRA with "
            "4.7M parameters at 73.4% and 91.7%") in text
    # 2. the budget: the paper's Table 5 as the notebook quotes it, and ours
    table5_line = next(line for line in code.splitlines() if line.startswith("table5 = "))
    table5_src = table5_line + "\n" + code.split(table5_line + "\n", 1)[1].split("\n")[0]
    namespace: dict = {}
    exec(table5_src, namespace)  # noqa: S102 - the notebook's own quoted table
    table5 = namespace["table5"]
    assert [v[0] for v in table5.values()] == [8, 8, 8, 8, 4, 4, 2]
    assert "with r = 8 for one type of attention weight, r = 4 for two, r = 2 for all four" in text
    assert "spends 18M parameters on GPT-3 175B" in text and 18e6 < 96 * 8 * 2 * 12288 < 19e6
    assert "it is preferable to adapt more weight matrices than adapting a single type of weights with a larger rank" in text
    assert "W_o alone (73.2%) beats {W_q, W_k} (71.4%) on WikiSQL" in text and table5["Wo"][1] > table5["Wq,Wk"][1]
    best_gap = max(v[1] for w, v in table5.items() if "," in w) - max(v[1] for w, v in table5.items() if "," not in w)
    assert "on WikiSQL by 0.5 points, no more than the ±0.5% the table gives as the standard deviation across seeds" in text and round(best_gap, 1) == 0.5
    assert "2,048 trainable numbers, `fc2` alone at r = 8" in text and pa.BUDGET == 2048
    assert pa.rank_for_budget(("fc2",), 2048, shapes) == 8 and pa.trainable_count(pa.RunSpec(("fc2",), 8), shapes) == 2048
    assert "the head alone stops at r = 10" in text and pa.rank_for_budget(("head",), 2048, shapes) == 10
    budget = pa.budget_specs(pa.BUDGET, shapes)
    counts = [pa.trainable_count(s, shapes) for s in budget]
    assert "the budgets are met only to within a third" in text and 1 / 4 < 1 - min(counts) / 2048 <= 1 / 3
    one = {e: [st(s.targets, s.r, e) for s in budget if len(s.targets) == 1] for e in (20, E)}
    more = {e: [st(s.targets, s.r, e) for s in budget if len(s.targets) > 1] for e in (20, E)}
    assert "the best set of several layers leads the best single layer, and their seeds' ranges do not overlap" in text
    assert max(more[20])[1] > max(one[20])[2]
    assert "not every set of several layers beats every single layer" in text and min(m for m, _, _ in more[20]) < max(m for m, _, _ in one[20])
    # round-6 read-through: the verdict explains the epoch-20 `False` with the set that trails, and claims no more
    fc2_head, fc1 = st(("fc2", "head"), 5, 20)[0], st(("fc1",), 10, 20)[0]
    assert f"(the `False`): `fc2 + head` ({fc2_head:.1%}) trails `fc1` alone ({fc1:.1%})" in text and fc2_head < fc1
    assert pa.RunSpec(("fc2", "head"), 5) in budget and pa.RunSpec(("fc1",), 10) in budget
    assert "Spreading the budget bought speed" not in text and "several layers at a lower rank led after 20 epochs" not in text
    assert "after 20 epochs the best set of several layers led, though not every set did" in text
    assert "After 300, `fc1` alone ended highest on average" in text
    assert "`fc1` alone at r = 10 ends highest on average" in text
    assert max(budget, key=lambda s: st(s.targets, s.r, E)[0]) == pa.RunSpec(("fc1",), 10)
    six = [st(s.targets, s.r, E)[0] for s in budget if s.targets != ("head",)]
    assert "six of the seven choices end within two points" in text and max(six) - min(six) < 0.02
    # 3. subspace similarity, on the four runs the notebook trains again
    sim = [pa.RunSpec(("fc2",), r, seed) for r in (8, 64) for seed in (0, 1)]
    live = pa.by_spec(pa.train_runs(pretrained, rotated, sim, epochs=20, eval_epochs=range(1, 21)))
    assert all(np.array_equal(live[s]["history"], study[s, LR]["history"][:20]) for s in sim)
    A = {(s.r, s.seed): live[s]["A"]["fc2"] for s in sim}
    cross = [subspace.similarity_grid(A[8, 0], A[64, 1]), subspace.similarity_grid(A[8, 1], A[64, 0])]
    twins = subspace.similarity_grid(A[64, 0], A[64, 1])
    assert "φ(1, 1) above 0.5 in both seed pairs, against a random floor of 1/128" in text
    assert all(g[0, 0] > 0.5 for g in cross) and subspace.random_baseline(128, 1, 1) == 1 / 128
    assert "φ(8, 8) stays several times above its floor" in text and all(g[7, 7] > 3 * subspace.random_baseline(128, 8, 8) for g in cross)
    assert '"share a subspace of dimension 1 with normalized similarity > 0.5"' in text  # Hu et al. §7.2, on Figure 3
    assert "φ(i, i) stays above 0.5 up to i = 5 in both pairs" in text
    assert "These adapters trained only 20 epochs; 300 could differ" in text and "(§7.2), after 20 epochs:" in text
    assert [max(k + 1 for k in range(8) if g[k, k] > 0.5) for g in cross] == [5, 5]
    assert "Two r = 64 runs share even more" in text and all(twins[k, k] > max(g[k, k] for g in cross) for k in (0, 7))
    assert "`fc2` (128 inputs)" in text and shapes["fc2"][0] == 128
    start8, start64 = (pa.initial_A(pretrained, pa.RunSpec(("fc2",), r, 0))["fc2"] for r in (8, 64))
    assert "this course's `add_lora` draws A for r = 8 as the first 8 rows of what it draws for r = 64" in text
    assert (start8 == start64[:8]).all()
    assert "PEFT 0.21 does not" in text and not _peft_starts_nested()
    with torch.no_grad():
        inputs = pretrained.fc1(rotated.x_train).relu()
    s = np.linalg.svd(inputs.numpy(), compute_uv=False)
    assert "a handful of directions" in text and np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.99) + 1 <= 10
    # 4. learning against forgetting (item 17: what the table shows, at matched settings and two learning rates)
    assert "LoRA forgets less because it learns less" not in text.replace('"LoRA forgets less because it learns less"', "")
    fc2 = [(st(("fc2",), r, 20)[0], st(("fc2",), r, 20, "original_history")[0]) for r in pa.FORGET_RANKS]
    assert "a lower rank learns less of the rotated digits and keeps more of the upright ones, every step of the way" in text
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(fc2, fc2[1:]))

    def kept(t, r, lr):
        return [pa.kept_when_learned(study[pa.RunSpec(t, r, s), lr], 0.8) for s in stored["seeds"]]

    full_kept = {lr: np.mean([k for _, k in kept(("full",), None, lr)]) for lr in (LR, 1e-3)}
    lora = [(("fc2",), r) for r in pa.FORGET_RANKS] + [(pa.ALL_LAYERS, r) for r in pa.ALL_LAYER_RANKS]
    reached = [c for c in lora if all(kept(*c, LR))]
    assert "every LoRA setting that got there had kept less of the original task than full fine-tuning, on average over the seeds" in text
    assert len(reached) == 7 and all(np.mean([k for _, k in kept(*c, LR)]) < full_kept[LR] for c in reached)
    assert not any(kept(("fc2",), 1, LR))  # r = 1 on fc2 never reaches 80%
    # review round 2: at equal learning a lower rank on fc2 also kept more (the old "not forgetting less" was contradicted)
    assert "learning less, not forgetting less" not in text and "a lower rank also kept more" in text
    fc2_kept = [np.mean([k for _, k in kept(("fc2",), r, LR)]) for r in pa.FORGET_RANKS[1:]]
    assert all(a > b for a, b in zip(fc2_kept, fc2_kept[1:]))
    reached_new = [pa.at_epoch(study[pa.RunSpec(t, r, s), lr], "history", hit[0])
                   for t, r, lr in [(t, r, LR) for t, r in lora + [(("full",), None)]] + [(pa.ALL_LAYERS, 16, 1e-3), (("full",), None, 1e-3)]
                   for s, hit in zip(stored["seeds"], kept(t, r, lr)) if hit]
    assert "(last column: new task at 80–89%)" in text and f"{min(reached_new):.0%}–{max(reached_new):.0%}" == "80%–89%"
    before = digits_task.accuracy(pretrained, upright.x_test, upright.y_test)
    lora_slow = kept(pa.ALL_LAYERS, 16, 1e-3)
    assert "LoRA on all layers at r = 16 reaches 80% later but keeps most of the original task, full fine-tuning less than half" in text
    assert min(e for e, _ in lora_slow) > max(e for e, _ in kept(("full",), None, 1e-3))
    assert np.mean([k for _, k in lora_slow]) > before / 2 > full_kept[1e-3]
    assert "LoRA forgot more than full fine-tuning at learning rate 0.01 and much less at 0.001" in text
    # Biderman et al.'s rule (LoRA's rate ten times full fine-tuning's): LoRA at 0.01 against full fine-tuning at 0.001
    assert "with their rule instead (LoRA at 0.01, full fine-tuning at 0.001, both in its table), LoRA kept less" in text
    assert all(np.mean([k for _, k in kept(*c, LR)]) < full_kept[1e-3] for c in reached)
    final = [st(t, r, E, "original_history")[0] for t, r in lora + [(("full",), None)]]
    assert "After 300 epochs at 0.01 every run has forgotten nearly everything (guessing gets about 10%" in text and max(final) < 0.2
    r64 = sorted(pa.at_epoch(study[pa.RunSpec(pa.ALL_LAYERS, 64, s), LR], "history", E) for s in stored["seeds"])
    assert "one seed at r = 64 turns unstable late" in text and r64[0] < 0.7 < 0.9 < r64[1]
    # the dips in the trade-off curves (round-5 read-through, finding 3): in every seed, not an artefact of the mean
    assert "Every seed dips and recovers, so the dips are real" in text and "Later it falls again" in text
    for t, r, lr in ((("full",), None, LR), (pa.ALL_LAYERS, 16, 1e-3)):
        for s in stored["seeds"]:
            o = np.asarray(study[pa.RunSpec(t, r, s), lr]["original_history"])
            low = int(np.argmin(o[:10]))
            assert o[low] < before / 2 and o[low:].max() > o[low] + 0.1 and o[-1] < o[low:].max() - 0.1
    # the main line keeps one sentence of the learn/forget result, pointing at its deep dive
    main = " ".join(_main_line("09_paper_analyses.ipynb").split())
    assert "**Learning against forgetting** (deep dive): at equal learning, LoRA forgot more than full fine-tuning" in main
    assert "## Deep dive (optional): learning against forgetting, measured" in raw
    # Biderman et al., as quoted (checked against arXiv:2405.09673v2 by hand: docs/reviews/09_paper_analyses_author_check.md)
    assert '"in the standard low-rank settings, LoRA substantially underperforms full finetuning"' in text
    assert "(the benchmarks in §3.3" in text and "(§3.2)" not in text and "for instruction finetuning, conclude (§4.7)" in text
    assert "better maintains the base model's performance on tasks outside the target domain" in text
    assert "(≈100K prompt-response pairs)" in text and "(≈20B unstructured tokens)" in text and "10 − 100 ×" in text
    assert "Each dataset presents a unique tradeoff pattern" in text and "one order of magnitude higher than that of full finetuning" in text
    # the history deep dive: what seed 0 at 20 epochs had shown
    seed0 = {c: study[pa.RunSpec(*c, 0), LR] for c in [(("fc1",), 10), (("fc2",), 16), (("fc2",), 64), (("full",), None)]}
    assert "seed 0 was the worst of three for `fc1` at r = 10" in text
    assert pa.at_epoch(seed0[("fc1",), 10], "history", 20) == st(("fc1",), 10, 20)[1]
    full0 = seed0[("full",), None]
    assert "LoRA on one layer at r = 16 and 64 learned less *and* forgot more than full fine-tuning" in raw.replace("\n", " ")
    for r in (16, 64):
        run = seed0[("fc2",), r]
        assert pa.at_epoch(run, "history", 20) < pa.at_epoch(full0, "history", 20)
        assert pa.at_epoch(run, "original_history", 20) < pa.at_epoch(full0, "original_history", 20)
    assert "## References" in text and "arXiv:2106.09685" in text and "arXiv:2405.09673" in text


def test_08_lora_variants():
    """Every number and comparison notebook 08's prose states, recomputed (the table's from the stored sweep)."""
    import torch

    from lora_edu import data as stored
    from lora_edu import digits_task, nf4, variant_runs

    raw = prose("08_lora_variants.ipynb")
    text = " ".join(raw.split())
    nb = json.loads((NOTEBOOKS / "08_lora_variants.ipynb").read_text())
    outputs = printed(nb)
    # the main line: at most 1,400 words before the first deep dive (References excluded)
    assert main_line_words("08_lora_variants.ipynb") <= 1400
    # the code book: 8 positive, 7 negative, an exact 0; the offset as bitsandbytes writes it, and its docstring (item 12)
    code = nf4.nf4_code_book()
    assert "8 positive, 7 negative and an exact 0" in text and (code > 0).sum() == 8 and (code < 0).sum() == 7
    assert "about equally often" not in text and "dense near 0 where normal weights are dense" in text
    share = re.search(r"share of normal weights on each code, blocks of 64: ([\d.]+)% to ([\d.]+)%", outputs)
    assert share and float(share.group(2)) > 4 * float(share.group(1))  # far from equal shares of 6.25 % each
    assert "at most one float32 step" not in text and "only in the last few bits of float32" in text
    steps = nf4.nf4_code_book(929 / 960) - code
    ulp = torch.nextafter(code.abs(), torch.tensor(2.0)) - code.abs()
    assert 1 < (steps.abs() / ulp).max() <= 8
    assert re.search(r"absmax 2\.\d\d standard deviations on average \(the code book puts ±1 at 1\.85\)", outputs)
    assert "bitsandbytes uses 0.9677083, which its docstring says \"was empirically optimized\"" in text
    assert f"{nf4.NF4_OFFSET:.7f}" == "0.9677083" and f"{929 / 960:.7f}" == "0.9677083"
    import bitsandbytes.functional as bnbf
    doc = " ".join(bnbf.create_normal_map.__doc__.split())
    quoted = ("The default (0.9677083) covers up to ~1.845 standard deviations and was empirically optimized to minimize "
              "quantization error for typical neural network weight distributions.")
    assert quoted in doc and f'"{quoted}"' in text
    assert "mean of 1 − 1/(2·15) and 1 − 1/(2·16), that is 929/960, rounds to the same 7 digits" in text
    assert "The docstring's \"~1.845\" is 1.848 computed" in text
    assert f"{torch.special.ndtri(torch.tensor(nf4.NF4_OFFSET, dtype=torch.float64)).item():.3f}" == "1.848"
    # bits a parameter
    assert "32/64 = 0.5 bits" in text and "8/64 + 32/(64·256)" in text and "blocks of 256" in text
    assert f"Blocks of 64 cost 4.5 bits a parameter, {nf4.bits_per_parameter(64, True):.3f} with double quantization" in text
    assert nf4.bits_per_parameter(64) == 4.5 and nf4.ABSMAX_BLOCKSIZE == 256
    # where equality with bitsandbytes holds (item 13; the numbers: tests/lessons/test_variant_runs.py)
    assert "8-bit scale codes that differ: 32 of 16,384" in outputs
    assert "dequantized weights that differ: 1,865 of 1,048,576, by at most 5.8e-04" in outputs
    assert "4-bit codes identical to bitsandbytes': True" in outputs
    assert ("Our codes and weights equal bitsandbytes' on the CPU, bit for bit, except a few 8-bit scale codes under double "
            "quantization") in text
    assert "**With** double quantization the 4-bit codes are still identical, but a few 8-bit scale codes differ" in text
    assert "identical to bitsandbytes', and so are the dequantized weights" not in text
    assert "the lookup-table model gives bitsandbytes' 8-bit codes exactly: True" in outputs
    assert "where the codes differ (32): ours strictly nearer to the value True; the value within half a grid step of the two codes' midpoint True" in outputs
    assert "On this small layer (16 scales) every 8-bit code agrees, so the outputs are identical" in text
    assert "8-bit scale codes equal to Linear4bit's on this layer: True" in outputs and "Linear4bit| on a batch: 0.0e+00" in outputs
    assert 64 * 16 // 64 == 16
    # QLoRA's adapter dtype (item 14): the paper's bf16, PEFT's float32 upcast, our float32
    assert "the adapter, are 16-bit BrainFloat (§3, eq. 5)" in text and "the adapter is in full precision" not in text
    assert ("To summarize, QLORA has one storage data type (usually 4-bit NormalFloat) and a computation data type (16-bit "
            "BrainFloat).") in text
    import inspect

    import peft
    assert ("will only cast adapter weights using float16 or bfloat16 to float32, as this is typically required for stable "
            "training") in " ".join(inspect.getdoc(peft.get_peft_model).split())
    # LoRA+'s λ (item 15): PEFT's docstring quoted exactly
    from peft.optimizers import create_loraplus_optimizer
    peft_doc = " ".join(inspect.getdoc(create_loraplus_optimizer).split())
    quoted = ("Should be ≥1. Should be set in tandem with the optimizer learning rate (lr); should be larger when the task is "
              "more difficult and the model needs to update its features to learn well.")
    assert quoted in peft_doc and f'"{quoted}"' in text
    assert "Set this to a value greater than 1 for best performance." in text and "commit 2f78caa" in text
    assert variant_runs.LORAPLUS_RATIO == 16 and "we use λ = 16" in text
    # the error on the trained digits weights: NF4 below int4 and FP4 (both layers, and normal data)
    torch.manual_seed(0)
    pretrained = digits_task.pretrained_model()
    books = {"nf4": nf4.nf4_code_book(), "fp4": nf4.fp4_code_book(), "int4": nf4.int4_code_book()}
    for w in (pretrained.fc1.weight.detach().float(), pretrained.fc2.weight.detach().float(), torch.randn(128, 128)):
        err = {k: ((w - nf4.roundtrip(w, b)).norm() / w.norm()).item() for k, b in books.items()}
        assert err["nf4"] < min(err["fp4"], err["int4"]), err
    assert "NF4 has the lowest error of the three on both trained layers and on normal data" in text
    assert f"({pretrained.fc1.weight.numel():,} and {pretrained.fc2.weight.numel():,} weights)" in text
    # the table, from the stored sweep (tests/lessons/test_variant_runs.py re-runs it)
    sweep = stored.load_json("variants_digits.json")
    best = {b["method"]: b for b in variant_runs.best_per_method(sweep["results"])}
    assert f"Here every run trains {sweep['epochs']} epochs" in text and "rank 4 on `fc1` and `fc2`" in text and sweep["r"] == 4
    # round-6 read-through: LoRA+'s "chosen lr" is A's rate, B's is λ times it; r = 4 cannot test rsLoRA's claim
    assert "For LoRA+, \"chosen lr\" is A's rate; B's is λ = 16 times it" in text
    assert "At r = 4 rsLoRA's scale is only twice LoRA's (section 6)" in text and "r =  4: scale 8 (α/r would be 4)" in outputs
    assert "The claim is about higher ranks, which this table does not test" in text
    # the whole procedure with five seeds (review round 2: one seed had put QLoRA 9 points below LoRA)
    runs = {0: sweep["results"], **{int(s): res for s, res in sweep["seed_repeats"].items()}}
    chosen = {s: {b["method"]: b for b in variant_runs.best_per_method(res)} for s, res in runs.items()}
    assert sorted(runs) == [0, 1, 2, 3, 4] and "repeated with five seeds" in text
    assert "has the highest test accuracy at every seed" in text
    assert all(max(c.values(), key=lambda b: b["accuracy"])["method"] == "PiSSA" for c in chosen.values())
    above = [s for s in runs if chosen[s]["QLoRA"]["accuracy"] > chosen[s]["LoRA"]["accuracy"]]
    assert "QLoRA** scored below LoRA at seed 0 and above it at three of the other four" in text and above == [1, 3, 4]
    assert "one seed put QLoRA below LoRA, three of four others above" in text
    assert "pays for the 4-bit base in accuracy" not in text and "has the best accuracy on this task" not in text
    ranges = [max(c[m]["accuracy"] for c in chosen.values()) - min(c[m]["accuracy"] for c in chosen.values()) for m in variant_runs.METHODS]
    assert "the seed alone moves a method by up to 16 points" in text and round(100 * max(ranges)) == 16
    extra = best["DoRA"]["extra"] - best["LoRA"]["extra"]
    assert f"DoRA** trains {extra} more numbers (one magnitude per output feature)" in text and extra == 128 + 128
    assert "rsLoRA at r = 4 is LoRA with a scale twice as large" in text and (8 / 4**0.5) / (8 / 4) == 2
    data = digits_task.load_digits_task(rotate=True)
    (x_val, _), (x_test, _) = variant_runs.holdout_halves(data)
    assert f"validation** half of the held-out digits ({len(x_val)} of {len(data.x_test)})" in text
    assert f"the other {len(x_test)}, the *test* digits" in text and f"One digit of the {len(x_test)} is {100 / len(x_test):.2f} points" in text
    spread = lambda accs: max(accs) - min(accs)  # noqa: E731
    tuned = spread([b["accuracy"] for b in best.values()])
    assert all(spread([r["accuracy"] for r in sweep["results"] if r["lr"] == lr]) > tuned for lr in sweep["lrs"])  # seed 0
    wider = [s for s in runs if all(spread([r["accuracy"] for r in runs[s] if r["lr"] == lr])
                                    > spread([b["accuracy"] for b in chosen[s].values()]) for lr in sweep["lrs"])]
    assert "At four of the five seeds (printed last), every shared rate spreads the methods further apart" in text
    assert len(wider) == 4 and 0 in wider
    assert "computes an extra norm per step" in text
    # the step-time columns, from benchmarks/bench_variants_step.py's stored result
    steps = stored.load_json("variants_step_times.json")
    ms, machine = steps["ms_per_step"], steps["machine"]
    jitter = {m: t["median"] - t["min"] for m, t in ms.items()}
    assert f"on one batch of {steps['batch_size']} digits, in {steps['dtype']} as trained here" in text
    assert steps["dtype"] == str(digits_task.DTYPE).replace("torch.", "") and steps["torch_threads"] == 1
    assert f"over rounds of {steps['steps_per_round']} steps" in text and f"on the shared {machine['cores']}-core course machine" in text
    assert "LoRA and rsLoRA do identical work (only the scale differs), so their times must agree: they do, within the min-to-median spread" in text
    assert abs(ms["LoRA"]["min"] - ms["rsLoRA"]["min"]) <= max(jitter["LoRA"], jitter["rsLoRA"])
    others = [t["median"] for m, t in ms.items() if m != "QLoRA"]
    assert "Its step is the slowest in the table" in text and ms["QLoRA"]["min"] > max(others)
    assert "max difference to each adapter alone: 1.8e-15; to PEFT's adapter_names: 1.8e-15" in outputs
    assert "## References" in text and "§4.3" in text and "arXiv:2402.12354" in text


def test_07_real_language_model():
    """Notebook 07's prose against its code, its data, the model's facts, the sweep's file and its stored outputs."""
    nb = json.loads((NOTEBOOKS / "07_real_language_model.ipynb").read_text())
    text = " ".join(prose("07_real_language_model.ipynb").split())
    code = code_of(nb)
    outputs = printed(nb)
    from lora_edu.core import smollm2
    from lora_edu.lessons import chat_task as ct

    n_params = int(re.search(r"LlamaForCausalLM: ([\d,]+) parameters, (\d+) layers", outputs).group(1).replace(",", ""))
    assert "about 270 MB, the weights in bfloat16" in text and round(2 * n_params / 1e7) * 10 == 270
    # The Q4_1 block: 20 bytes, 2 float16 numbers, 32 codes of 4 bits, 5 bits a weight.
    assert smollm2.Q4_1_BYTES == 20 and smollm2.Q4_1_BLOCK == 32 and 2 * 2 + 32 * 4 // 8 == 20
    assert "costs 160 bits for 32 weights: 5 bits a weight" in text and 20 * 8 == 160 and 160 / 32 == 5
    assert "16 equally spaced values from m to m + 15·d" in text and 2**4 == 16
    assert "**Exercise 7.**" in text and "ex07_dequantize_q4_1_block" in json.dumps(nb)
    # The task's rules and counts, as printed.
    task = ct.load_task()
    counts = task["counts"]
    assert f"The course wrote {counts['questions']} questions in two sets" in text
    assert (f"{counts['questions']} questions; rule 1 holds out {counts['held_out_half']} of set 2's {counts['set_2']}; the base "
            f"model answers {counts['held_out_half_right_in_prose']} of those right in its own words, "
            f"{counts['held_out_half_right_both_ways']} also in the format's opening; the first {len(task['held_out'])} (hash order) are scored"
            ) in outputs
    assert (f"{len(task['train'])} training questions (right in the format's opening), {len(task['validation'])} validation "
            "questions (the other two halves, known both ways)") in outputs
    assert "Set 2 was written later, as fresh held-out questions" in text and counts["set_2"] == 428
    assert "after held-out scores on set 1 had been seen" not in text   # said once, in the deep dive, with the story
    # The recipe the prose names is the code's, and the sweep's file was made with it.
    recipe, sweep = ct.RECIPE, ct.load_sweep()
    assert (recipe["top_layers"], recipe["r"], recipe["alpha"], recipe["steps"], recipe["batch_size"]) == (2, 8, 16, 60, 8)
    assert "the **last two** of the 30 layers (rank 8, α = 16)" in text and "entering layer 28" in text
    assert "the 28 frozen layers" in text and "Sixty AdamW steps of eight examples" in text
    assert "The two layers and the sixty steps come from an earlier search on set 1 alone" in text and "(`--top-layers 2`)" in text
    assert sweep["recipe"] == recipe and ct.load_cache_timing()["recipe"] == recipe
    assert 'steps=ct.RECIPE["steps"], lr=LR' in code and 'LR = ct.load_sweep()["chosen"]["LoRA"]' in code
    assert "four learning rates (full fine-tuning, used in a deep dive, at five), with seeds 0 and 1" in text
    assert len(sweep["lrs"]["LoRA"]) == 4 and len(sweep["lrs"]["full fine-tuning"]) == 5 and sweep["validation_seeds"] == [0, 1]
    assert "its first three rates put LoRA's choice at the grid's lowest" in text
    assert "the **same 14 weight matrices** (every linear layer of layers 28 and 29" in text and 7 * 2 == 14
    # The validation questions (rule 1); the rule that chose the rates (ct.choose) and, on set 1's split, the layers and steps.
    assert (sweep["n_fit"], sweep["n_val"], sweep["n_train"]) == (len(task["train"]), len(task["validation"]), len(task["train"]))
    assert "most often right in the format" in text
    runs = ct.load_recipe_runs()
    chosen_cfg = ct.choose(runs["runs"], key="cfg", share="right_in_format")
    assert (chosen_cfg["top_layers"], chosen_cfg["steps"]) == (recipe["top_layers"], recipe["steps"])
    six = next(r for r in runs["runs"] if r["cfg"]["top_layers"] == 6)
    four = next(r for r in runs["runs"] if r["cfg"] == dict(top_layers=4, steps=60, lr=0.002))
    assert "about 1.2 times as long" in text and round(six["train_s"] / four["train_s"], 1) == 1.2
    assert six["val_loss"] == min(r["val_loss"] for r in runs["runs"][:6])
    assert "It was not the first rule" in text and "Scores seen while choosing no longer measure a recipe fairly" in text
    # Why set 2: set 1's held-out scores (38 of 44 for both rules' recipes, short of 40 = within 10 points of 100 %) were
    # seen while the recipe changed; they are printed from the record kept in chat_task_recipe.json.
    first, before = runs["first_rule"], runs["set_1_held_out"]
    two = next(r for r in before["held_out"] if r["method"] == "LoRA" and r["seed"] == 0)
    assert first["held_out_right_in_format_count"] == 38 == round(two["right_in_format"] * before["n_held_out"])
    assert "scored 38 of 44 right in the format there" in text and "which also scored 38 of 44" in text
    assert "so at least 40" in text and math.ceil(0.9 * first["n_held_out"]) == 40
    assert "the first rule's recipe (top 4 layers, lr 0.002) 38 of 44; two layers (lr 0.004, seed 0) 38 of 44" in outputs
    assert ct.choose(runs["runs"][:6], key="cfg", share="right_in_format") == chosen_cfg
    # The held-out line, and issue 27's bar: >= 40 questions, LoRA >= 75 % in the format, within 10 points of the base.
    n, base, lora = (int(x) for x in re.search(
        r"Held-out score \((\d+) questions\): base model (\d+)% right, LoRA (\d+)% right in the format", outputs).groups())
    assert outputs.count("Held-out score (") == 1
    assert n == len(task["held_out"]) >= 40 and lora >= 75 and base == 100   # base: 100 % by construction of rule 2
    assert "most of it, not all" in text and lora < base
    # Learn and forget: both rules pick the same rates; the methods learned about as much (same mean share, held-out losses
    # within 0.01), and full fine-tuning forgot less (lower prose perplexity) in every seed.
    rows = {m: [r for r in sweep["held_out"] if r["method"] == m] for m in ct.METHODS}
    lo, fft = rows["LoRA"], rows["full fine-tuning"]
    for method in ct.METHODS:
        losses = {lr: sum(r["val_loss"] for r in sweep["validation"] if r["method"] == method and r["lr"] == lr)
                  for lr in sweep["lrs"][method]}
        assert min(losses, key=losses.get) == sweep["chosen"][method]
    assert "Both rules pick the same rates here" in text
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    assert f"{mean(lo, 'right_in_format'):.0%}" == f"{mean(fft, 'right_in_format'):.0%}"
    assert "the same mean share of held-out replies right in the format to the percent (the counts are printed" in text
    n = len(task["held_out"])
    counts_right = {m: sum(round(r["right_in_format"] * n) for r in rows[m]) for m in ct.METHODS}
    assert str({m: f"{counts_right[m]} of {n * len(sweep['seeds'])}" for m in ct.METHODS}) in outputs
    assert "held-out losses within 0.01 of each other" in text
    # Deep dive 36: only B moves on the first step, since A's gradient is zero while B = 0 (printed in deep dive 37).
    assert "A's gradient is zero while B = 0" in text and "A's gradient is zero while B = 0, in both: True" in outputs
    assert 'if n.endswith("lora_A")' in code and "(α/r)" in text
    assert abs(mean(lo, "held_out_loss") - mean(fft, "held_out_loss")) < 0.01
    assert "Full fine-tuning forgot less: its prose perplexity is lower than LoRA's in every seed" in text
    assert max(r["prose_perplexity"] for r in fft) < min(r["prose_perplexity"] for r in lo)
    assert ("Biderman et al.'s LoRA forgot less while learning less; at equal learning, their §4.3 found that the better "
            "trade-off depends on the data set") in text and '"Each dataset presents a unique tradeoff pattern"' in text
    # The summary claims only what the main line shows: the learn/forget verdict stays in its deep dive (round-6 read-through).
    assert "Learn and forget" not in text
    assert f"one paragraph and {len(task['train'])} questions settle nothing general" in text
    # The live run is the sweep's LoRA seed 0.
    seed0 = next(r for r in sweep["held_out"] if r["method"] == "LoRA" and r["seed"] == 0)
    assert round(100 * seed0["right_in_format"]) == lora
    # Biderman et al., quoted as they wrote it (abstract; Section 4.3, its first sentence).
    # (review07: the v2 text has no comma after "target domain"; the abstract's sentence keeps its qualifier.)
    for quote in ('"in the standard low-rank settings, LoRA substantially underperforms full finetuning"',
                  "\"Nevertheless, LoRA better maintains the base model's performance on tasks outside the target domain.\"",
                  '"trivial that models that change less when finetuned to a new target domain will forget less of the '
                  'source domain"'):
        assert quote in text
    # The command runs the recipe at a constant learning rate (no scheduler), as the prose says; the notebook's decays.
    import inspect

    from lora_edu import finetune
    assert "at a constant learning rate" in text and "lr_scheduler" not in inspect.getsource(finetune)
    assert "lr_scheduler" in inspect.getsource(ct.train) and "the same recipe with PEFT" not in text.lower()
    # The routing deep dive moved to notebook 10 (issue 27's second payoff; 07 must run within 60 s): 07 only points to it.
    assert "notebook 10 (optional)" in text and "routing" not in code and "route" not in code
    # The recipe's deep dive says which held-out scores were seen, and when (review07, row 13; set 2).
    assert "had scored those questions" in text and "That first run had already scored its held-out seeds at 0.002" in text
    assert "forgets less because it learns less" not in text
    assert main_line_words("07_real_language_model.ipynb") <= 1400
    # (trim to 29 min) The main line still says, in one sentence, that held-out scores were seen before the recipe was
    # chosen, and where the details are; the Hub snippet moved to a deep dive (its 270 MB is checked above).
    main = " ".join(_main_line("07_real_language_model.ipynb").split())
    assert ("The validation questions chose the learning rate; held-out scores played no part in it (deep dive: how the "
            "recipe was chosen)") in main and "## Deep dive (optional): how the recipe was chosen" in text
    assert "from_pretrained(" not in main and "## Deep dive (optional): the model from the Hub" in text


def test_10_classifying_messages():
    """Notebook 10 (07's routing deep dive, moved): the numbers its prose and summary state are the ones it prints, the
    step count is the cross-validation's choice, and 07's old 20-step score and this notebook's previous score (21 of 26,
    before the shared prefix) that the deep dive reports are stated as seen."""
    from lora_edu.lessons import chat_task as ct
    from lora_edu.lessons import routing_task as rt

    nb = json.loads((NOTEBOOKS / "10_classifying_messages.ipynb").read_text())
    text = " ".join(prose("10_classifying_messages.ipynb").split())
    code = code_of(nb)
    outputs = printed(nb)
    routing = rt.load_routing()
    n_train, n_held = len(routing["train"]), len(routing["held_out"])
    assert (n_train, n_held) == (38, 26) and f"{n_train} messages to train on, {n_held} held out" in outputs
    assert "64 short messages" in text and n_train + n_held == 64 and f"trained on {n_train} labelled messages" in text
    # The recipe is 07's (layers, r, alpha, learning rate); only the step count was chosen, by the stored rule.
    assert 'ct.load_sweep()["chosen"]["LoRA"]' in code and 'steps=choice["chosen"]' in code
    assert (ct.RECIPE["top_layers"], ct.RECIPE["r"], ct.RECIPE["alpha"]) == (2, 8, 16)
    assert "LoRA of rank 8 (α = 16) on every linear layer of the top two layers" in text
    choice = rt.load_steps_choice()
    assert list(rt.STEP_CHOICES) == [20, 40, 60] and "among 20, 40 and 60" in text
    assert choice["chosen"] == 60 and f"→ {choice['chosen']} steps" in outputs
    right = {int(s): r for s, r in choice["right"].items()}
    assert "Sixty steps beat forty by three messages of 38, all in one fold (fold 1)" in text and right[60] - right[40] == 3
    by_fold = {(r["steps"], r["fold"]): r["right"] for r in choice["runs"]}
    assert [by_fold[60, f] - by_fold[40, f] for f in range(3)] == [0, 3, 0] and choice["n_train"] == 38
    # The shared prefix: its token count and the stored speed-ups are printed, and the prose states the count.
    timing = rt.load_prefix_timing()
    assert timing["prefix_tokens"] == 17 and "the same 17 tokens, the chat marker and the instruction" in text
    assert (f"shared prefix: 17 of a prompt's {timing['mean_prompt_tokens_train']:.0f} tokens on average; computed once, caching "
            f"is {timing['speedup_min']['caching 64 messages']:.1f}× and a training step {timing['speedup_min']['a training step']:.1f}× "
            "as fast as with whole prompts") in outputs
    # Zero-shot: every held-out message to billing, 7 of 26, no more than the best constant team.
    zero = int(re.search(r"zero-shot: (\d+) of 26 held-out messages routed right", outputs).group(1))
    assert zero == 7 and "{'billing': 26, 'shipping': 0, 'technical': 0, 'account': 0}" in outputs
    held_labels = [m["label"] for m in routing["held_out"]]
    assert max(rt.constant_shares(routing["labels"], held_labels).values()) == zero / n_held == held_labels.count("billing") / n_held
    assert "sent every held-out message to billing: 7 of 26 right, no more than always answering one team gets" in text
    assert "about a quarter" in text and all(abs(c / n_train - 0.25) < 0.05 for c in
                                              (sum(m["label"] == lab for m in routing["train"]) for lab in routing["labels"]))
    # The adapter: 22 of 26; four still misrouted (listed); one message is about 4 points; disable_adapter gives the base back.
    adapted = int(re.search(r"with the adapter (\d+) \(", outputs).group(1))
    assert adapted == 22 and "22 of 26 right" in text and "held-out messages routed right (26): zero-shot 7 (27%), with the adapter 22 (85%)" in outputs
    assert "Four still go to the wrong team" in text and outputs.count(", sent to ") == n_held - adapted == 4
    assert "Each of the four has a word" in text and "reading of the four messages" in text
    assert "about 4 points" in text and round(100 / n_held) == 4
    assert "with the adapter off, the zero-shot choices again: True" in outputs
    # The adapter file against the model.
    assert "adapter file: 0.65 MB; the base model's frozen weights in float32: 538 MB" in outputs
    assert "the adapter file is 0.65 MB beside the model's 538 MB" in text
    # The deep dive says that 07's 20-step score on these held-out messages was seen before the choice.
    assert "27 % zero-shot, 54 % with the adapter. That score was seen before this notebook chose its step count" in text
    # ... and so was the previous version's own score, before the shared prefix and 07's new learning rate.
    assert ("This notebook's own earlier score, 21 of 26 with the adapter, had been seen too" in text
            and "the step count was then chosen again by the same declared cross-validation" in text)
    # No graded exercise (the grader and the lab plan stay as they are); an ungraded predict-first one.
    assert "le.exercise_bank." not in code and "**Try it (predict first, not graded).**" in text and "my_guess" in code
    for quote in ('"One of the main benefits of PEFT is that an adapter file generated by a PEFT method is a lot smaller than the '
                  'original model, which makes it super easy to manage and use multiple adapters."',
                  '"Context manager that disables the adapter module. Use this to run inference on the base model."',
                  '"Only one adapter can be active at a time."'):
        assert quote in text
    assert main_line_words("10_classifying_messages.ipynb") <= 1400


@pytest.mark.xfail(strict=True, reason="issue 27: LoRA must be within 10 points of the base model's rate (100 % by rule 2); "
                   "on set 2's 48 fresh held-out questions it is 88 % (42 of 48; 44 needed), LoRA at the rate the 94 validation "
                   "questions chose. Variants tried on validation (taught answer words only, a loss on the format's tokens only, "
                   "a soft target, dropout, more training questions, attention or MLP only, one layer, rank 4) did not beat it: "
                   "see docs/reviews/07_real_language_model_author_check.md, 'Not met'.")
def test_07_lora_within_ten_points_of_the_base_model():
    nb = json.loads((NOTEBOOKS / "07_real_language_model.ipynb").read_text())
    outputs = printed(nb)
    base, lora = (int(x) for x in re.search(r"base model (\d+)% right, LoRA (\d+)% right in the format", outputs).groups())
    assert lora >= base - 10


def _main_line(name: str) -> str:
    """The markdown of the main line: every markdown cell before the first deep dive, without the references."""
    cells = [c for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "markdown"]
    main = []
    for cell in cells:
        text = "".join(cell["source"])
        if "## Deep dive (optional):" in text:
            break
        main.append(text.split("## References")[0])
    return "\n".join(main)


@pytest.mark.parametrize("name", ["04_rank_and_alpha.ipynb", "05_lora_from_scratch.ipynb", "06_peft_comparison.ipynb",
                                  "07_real_language_model.ipynb", "08_lora_variants.ipynb", "09_paper_analyses.ipynb"])
def test_04_to_06_keep_a_short_main_line_in_one_convention(name):
    """Issue 24, items 1 and 3: at most 1,400 words before the deep dives; no sentence says that A starts at zero."""
    from lora_edu.course import course_map

    counter = getattr(course_map, "main_line_words", None)
    words = counter(NOTEBOOKS / name) if counter else len(_main_line(name).split())
    assert words <= 1400, f"{name}: {words} words in the main line"
    main = " ".join(_main_line(name).split())
    says_a_is_zero = r"\bA\b(?:(?!\bB\b)[^.;:])*\b(starts?|initiali[sz]ed|set|is) (at |to )?zero|\bA = 0\b"  # no B in between
    assert not re.search(says_a_is_zero, main), (name, re.search(says_a_is_zero, main))
    assert re.search(says_a_is_zero, "here A starts at zero") and not re.search(says_a_is_zero, "A random and B starts at zero")
    headings = [line for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "markdown"
                for line in "".join(c["source"]).splitlines() if line.startswith("## ")]
    after = headings[headings.index("## Summary") + 1:]
    assert after[-1] == "## References" and all(h.startswith("## Deep dive (optional): ") for h in after[:-1]), after
