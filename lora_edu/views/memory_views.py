"""Pictures and the interactive calculator of notebook 01, built on :mod:`lora_edu.core.memory`.

Kept out of the notebook so that its cells stay a few lines long, and so the browser test and
the unit tests can drive the very calculator the learner sees.
"""
from __future__ import annotations

from importlib import resources

import matplotlib.pyplot as plt

from lora_edu.core.memory import CARDS, GB, LINEAR_MODULES, MEASURED_CASES, PRESETS, RECIPES, GiB, estimate, parameter_counts, usable_memory
from lora_edu.data import load_json

PARTS = ("weights", "gradients", "optimizer", "activations", "other")
COLORS = {"weights": "#4C72B0", "gradients": "#DD8452", "optimizer": "#C44E52", "activations": "#55A868", "other": "#BBBBBB"}
#: The cards the figures draw, by the name they are sold under: the memory a run can use on each, in
#: GiB (``lora_edu.core.memory.CARDS``, the one table of cards: what the card reports, less the CUDA
#: context). The peak must fit under that line.
GPUS_GIB = {name: card.usable / GiB for name, card in CARDS.items() if name in ("16 GB", "24 GB", "40 GB", "80 GB")}


def gpu_bytes(name: str) -> int:
    """The memory a training run can use on the card ``name`` ("24 GB", "80 GB", ...): the card's, less the CUDA context."""
    return usable_memory(name)


def parts_gb(est) -> dict[str, float]:
    """The parts alive at the estimate's peak, in GB, adding up to the peak; "other" is transients + workspace.

    A single-GPU estimate says which moment of the step holds the peak (``est.at_peak``): at the
    optimizer step, say, the activations are freed and AdamW's temporary is alive, so the bar shows no
    activations there. A per-GPU estimate of a sharded run stacks its static parts, its activations and
    the rest (gathered layers, gradient buffers, transients).
    """
    at_peak = getattr(est, "at_peak", None)
    if at_peak:
        return {part: at_peak[part] / GB for part in PARTS}
    return {"weights": est.weights / GB, "gradients": est.gradients / GB, "optimizer": est.optimizer / GB,
            "activations": est.activations / GB, "other": (est.peak - est.rule_of_thumb - est.activations) / GB}


def gpu_line_labels(gpus: dict[str, float], top: float, min_gap: float = 0.08) -> list[tuple[float, str]]:
    """Where to write the GPU lines' labels so that none overlaps another: (height in GB, text) pairs.

    ``gpus`` holds usable sizes in GiB (:data:`GPUS_GIB`); heights are in GB (10⁹ bytes), the axis's unit.
    Lines closer than ``min_gap`` of the axis height (``top``, GB) share one label, written at the
    highest of them ("16, 24, 40 GB cards (GiB)"): on a 70B model's axis the small cards' lines sit
    a few pixels apart and their separate labels would pile up.
    """
    groups: list[list[tuple[str, float]]] = []
    for name, size_gib in sorted(gpus.items(), key=lambda kv: kv[1]):
        size = size_gib * GiB / GB
        if groups and size - groups[-1][-1][1] < min_gap * top:
            groups[-1].append((name, size))
        else:
            groups.append([(name, size)])
    labels = []
    for group in groups:
        if len(group) == 1:
            name, size = group[0]
            labels.append((size, f"{name} card ({gpus[name]:.1f} GiB usable = {size:.1f} GB)"))
        else:
            labels.append((group[-1][1], ", ".join(n.replace(" GB", "") for n, _ in group[:-1])
                           + f", {group[-1][0]} cards (usable)"))
    return labels


def stacked_bars(ax, estimates: dict[str, object], gpus: dict[str, float] = GPUS_GIB, log: bool = False) -> None:
    """Draw one stacked bar per estimate (GB), with each GPU's usable memory (``gpus``, in GiB) as a horizontal line.

    GPU labels that would overlap are merged (:func:`gpu_line_labels`).
    """
    labels = list(estimates)
    bottoms = [0.0] * len(labels)
    for part in PARTS:
        values = [parts_gb(estimates[label])[part] for label in labels]
        ax.bar(labels, values, bottom=bottoms, color=COLORS[part], label=part)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    top = max(max(bottoms), max(gpus.values()) * GiB / GB) * 1.08
    for size_gib in gpus.values():
        ax.axhline(size_gib * GiB / GB, color="black", lw=0.8, ls="--")
    for height, text in gpu_line_labels(gpus, top):
        ax.text(-0.45, height, text, va="bottom", ha="left", fontsize=7,
                bbox=dict(facecolor="white", alpha=0.75, linewidth=0, pad=0.6))  # readable over a bar
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, top)
    ax.set_ylabel("GB (10⁹ bytes)")


#: The GPU measurements of benchmarks/measure_memory.py, one file a round: round 1 (calculator v1 and v2,
#: issue 16, an H200) and round 2 (issue 25, an H100: AdamW's three implementations, the QLoRA paper's recipe,
#: LLaMA-7B itself, the card's memory). Only the files that are committed are read.
ROUND_FILES = ("memory_measurements.json", "memory_measurements_round2.json")
MEASUREMENT_FILES = tuple(name for name in ROUND_FILES if resources.files("lora_edu.data").joinpath(name).is_file())


def load_measurements(name: str = MEASUREMENT_FILES[0]) -> dict:
    """One round's GPU measurements (benchmarks/measure_memory.py wrote them): device, versions, runs."""
    return load_json(name)


def compare_with_measurements(measurements: dict | list[dict] | None = None) -> list[dict]:
    """Each measured run beside the calculator's prediction: static part and peak, in bytes.

    ``measurements``: one round (a dict), several (a list), or by default every round. Each row
    names the card it ran on. bitsandbytes' paged optimizer state lives in CUDA managed memory,
    outside PyTorch's counters: the measured peak and static part add it (``paged_bytes``).
    """
    if measurements is None:
        measurements = [load_measurements(name) for name in MEASUREMENT_FILES]
    rounds = [measurements] if isinstance(measurements, dict) else list(measurements)
    rows = []
    for measured in rounds:
        for run in measured["runs"]:
            if run.get("oom") or run.get("error"):
                continue
            rows.append(_compare_run(run, measured))
    return rows


def _compare_run(run: dict, measured: dict) -> dict:
    case = MEASURED_CASES[run["case"]]
    seq_len = run.get("seq_len", measured["seq_len"])
    est = estimate(run["model"], batch_size=run["batch"], seq_len=seq_len, **case)
    paged = run.get("paged_bytes", 0)
    row = dict(model=run["model"], case=run["case"], batch=run["batch"], seq_len=seq_len, device=measured["device"],
               measured_peak=run["peak"] + paged, predicted_peak=est.peak, rule_of_thumb=est.rule_of_thumb,
               method=case["method"], checkpointing=case.get("gradient_checkpointing", False),
               quantization=case.get("quantization"), double_quant=case.get("double_quant", False),
               set_to_none=case.get("set_to_none", True), optimizer=case.get("optimizer", "adamw"),
               adamw_impl=case.get("adamw_impl", "foreach"), qlora_recipe=case.get("qlora_recipe"),
               trainable=run["trainable"], predicted_trainable=est.trainable_params)
    if "peak_reserved" in run:
        row["measured_reserved"] = run["peak_reserved"] + paged
    if case.get("quantization"):  # bitsandbytes packs two 4-bit weights a byte: compare bytes, not numel
        row.update(weight_bytes=run["weight_bytes"] + run["quant_state_bytes"], predicted_weight_bytes=est.weights)
    else:
        row.update(params=run["params"], predicted_params=est.total_params)
    if "static_after_step" in run:
        row.update(measured_static=run["static_after_step"] + paged, predicted_static=est.static)
    if "peak_step" in run:
        row.update(measured_step=run["peak_step"] + paged, predicted_step=est.step)
    return row


def plot_predicted_vs_measured(ax, rows: list[dict]) -> None:
    """Predicted peak and rule of thumb against the measured peak, log-log, with a ±10% band."""
    measured = [r["measured_peak"] / GB for r in rows]
    lo, hi = min(measured) * 0.5, max(measured) * 2
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="#55A868", alpha=0.15, label="±10%")
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.scatter(measured, [r["predicted_peak"] / GB for r in rows], s=18, color="#55A868", label="calculator (peak)")
    ax.scatter(measured, [r["rule_of_thumb"] / GB for r in rows], s=18, marker="x", color="#C44E52",
               label="rule of thumb: weights + grads + optimizer")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured peak on the GPU (GB)")
    ax.set_ylabel("predicted (GB)")
    ax.legend(fontsize=8)


#: What the static picture beside notebook 01's calculator shows: the calculator's settings, by label.
SNAPSHOT_SETTINGS = {
    "full": RECIPES["full fine-tuning"],
    "LoRA": RECIPES["LoRA"],
    "LoRA +\ncheckpointing": dict(RECIPES["LoRA"], gradient_checkpointing=True),
    "QLoRA": RECIPES["QLoRA"],
}


#: The methods notebook 01's side-by-side figure compares, each one recipe of ``RECIPES`` (or inference).
METHODS = {"full": RECIPES["full fine-tuning"], "LoRA": RECIPES["LoRA"], "QLoRA": RECIPES["QLoRA"],
           "inference": dict(method="inference")}


def methods_figure(models=("llama-7b", "llama-13b", "llama-2-70b"), batch_size: int = 1, seq_len: int = 512,
                   methods: dict[str, dict] | None = None):
    """Notebook 01's picture: one panel per model, one stacked bar per method (``METHODS``), bf16 weights, the parts
    alive at each method's peak, each card's usable memory as a dashed line. Returns the figure."""
    methods = methods or METHODS
    fig, axes = plt.subplots(1, len(models), figsize=(12, 3.8))
    for ax, model in zip(axes, models):
        stacked_bars(ax, {name: estimate(model, weight_dtype="bf16", batch_size=batch_size, seq_len=seq_len, **kw)
                          for name, kw in methods.items()})
        ax.set_title(f"{model}: {parameter_counts(model)['total'] / 1e9:.1f} B parameters", fontsize=10)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"The parts alive at each method's peak, batch {batch_size} × {seq_len}, bf16 weights, PyTorch's AdamW. "
                 "LoRA: r = 8 on q, v.\nQLoRA: 4-bit base, r = 16 on every linear layer, checkpointing (PEFT's recipe). "
                 "Dashed lines: each card's usable memory", fontsize=9)
    fig.tight_layout()
    return fig


def calculator_snapshot(model: str = "llama-3-8b", batch_size: int = 4, seq_len: int = 512,
                        settings: dict[str, dict] | None = None, gpus: dict[str, float] = GPUS_GIB):
    """A static figure of the calculator's bars for a few settings, so a reader without a live kernel
    (GitHub, a PDF) sees what the widget shows. Returns the figure."""
    settings = settings or SNAPSHOT_SETTINGS
    estimates = {label: estimate(model, batch_size=batch_size, seq_len=seq_len, **kw) for label, kw in settings.items()}
    fig, ax = plt.subplots(figsize=(7.2, 3.6), dpi=100)
    stacked_bars(ax, estimates, gpus=gpus)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{model}, batch {batch_size} × {seq_len} tokens, bf16 base, AdamW (foreach; moments in the trainable "
                 f"weights' dtype)\nLoRA: r = 8 on q, v, fp32 adapters; QLoRA: NF4 + double quantization, r = 16 on every "
                 f"linear, checkpointing (PEFT's recipe)", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.17)
    return fig


def memory_calculator():
    """The interactive calculator: pick a model and a method, see the stacked bar and a verdict.

    Returns the widget (display it as a cell's last line). ``calculator.update()`` redraws; it is
    exposed as an attribute so tests can time and drive it without a browser.
    """
    import ipywidgets as w

    from lora_edu.views.widget_tools import show_in

    style = {"description_width": "110px"}
    preset = w.Dropdown(options=[*PRESETS, "custom"], value="llama-7b", description="model", style=style)
    hidden = w.IntText(4096, description="hidden size", style=style)
    inter = w.IntText(11008, description="intermediate", style=style)
    layers = w.IntText(32, description="layers", style=style)
    heads = w.IntText(32, description="heads", style=style)
    vocab = w.IntText(32000, description="vocabulary", style=style)
    method = w.ToggleButtons(options=["full", "lora", "inference"], value="lora", description="method", style=style)
    dtype = w.Dropdown(options=["bf16", "fp16", "fp32"], value="bf16", description="weights dtype", style=style)
    batch = w.IntSlider(1, min=1, max=64, description="batch size", style=style)
    seq = w.IntSlider(512, min=128, max=8192, step=128, description="sequence length", style=style)
    rank = w.IntSlider(8, min=1, max=256, description="LoRA rank r", style=style)
    targets = w.SelectMultiple(options=LINEAR_MODULES, value=("q_proj", "v_proj"), rows=7, description="LoRA targets", style=style)
    ckpt = w.Checkbox(False, description="gradient checkpointing", style=style)
    four_bit = w.Checkbox(False, description="4-bit base (QLoRA)", tooltip="NF4 with double quantization, as in QLoRA", style=style)
    gpu = w.Dropdown(options=list(CARDS), value="24 GB", description="your GPU", style=style)
    verdict = w.HTML()
    out = w.Output()
    fig, ax = plt.subplots(figsize=(6.6, 3.2), dpi=100)
    plt.close(fig)

    def arch():
        if preset.value != "custom":
            return preset.value
        return dict(hidden_size=hidden.value, intermediate_size=inter.value, num_hidden_layers=layers.value,
                    num_attention_heads=heads.value, vocab_size=vocab.value)

    def toggles():
        settings = dict(quantization="nf4", double_quant=True) if four_bit.value else {}
        if method.value != "inference":
            settings["gradient_checkpointing"] = ckpt.value
        return settings

    syncing = {"on": False}  # True while the code itself sets widgets, so they do not redraw five times

    def on_preset(change):
        if syncing["on"]:
            return
        if preset.value != "custom":
            syncing["on"] = True
            for box, key in ((hidden, "hidden_size"), (inter, "intermediate_size"), (layers, "num_hidden_layers"),
                             (heads, "num_attention_heads"), (vocab, "vocab_size")):
                box.value = PRESETS[preset.value][key]
            syncing["on"] = False
        update()

    def on_size(change):
        if syncing["on"]:
            return
        if preset.value != "custom":  # editing a size means a custom model
            syncing["on"] = True
            preset.value = "custom"
            syncing["on"] = False
        update()

    def update(change=None):
        try:
            est = estimate(arch(), method=method.value, weight_dtype=dtype.value, batch_size=batch.value, seq_len=seq.value,
                           lora_r=rank.value, lora_targets=targets.value or ("q_proj",), **toggles())
        except (ValueError, TypeError) as exc:  # custom sizes can be inconsistent: say so, keep the last picture
            verdict.value = f"<b style='color:#C44E52'>Cannot estimate: {exc}</b>"
            return
        ax.clear()
        stacked_bars(ax, {f"{method.value}": est}, gpus={gpu.value: gpu_bytes(gpu.value) / GiB})
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the GPU line
        fig.subplots_adjust(left=0.12, right=0.78)
        ax.set_title(f"{est.trainable_params:,} trainable of {est.total_params:,} parameters", fontsize=9)
        fits = est.peak <= gpu_bytes(gpu.value)
        verdict.value = (f"<b>Peak ≈ {est.peak / GB:.1f} GB = {est.peak / GiB:.1f} GiB</b> "
                         f"(weights {est.weights / GB:.1f}, gradients {est.gradients / GB:.2f}, "
                         f"optimizer {est.optimizer / GB:.2f}, activations {est.activations / GB:.1f}). "
                         + ("<b style='color:#55A868'>Fits</b>" if fits else "<b style='color:#C44E52'>Does not fit</b>")
                         + f" on a {gpu.value} card ({gpu_bytes(gpu.value) / GiB:.1f} GiB usable), at its peak "
                         f"({est.peak_at}).")
        show_in(out, fig)

    preset.observe(on_preset, names="value")
    for widget in (hidden, inter, layers, heads, vocab):
        widget.observe(on_size, names="value")
    for widget in (method, dtype, batch, seq, rank, targets, ckpt, four_bit, gpu):
        widget.observe(update, names="value")
    update()
    sizes = w.VBox([hidden, inter, layers, heads, vocab])
    controls = w.VBox([preset, sizes, method, dtype, batch, seq, rank, targets, ckpt, four_bit, gpu])
    box = w.HBox([controls, w.VBox([verdict, out])])
    box.add_class("lora-edu-view")  # lets the browser test find the verdict and figure
    box.update, box.verdict, box.controls = update, verdict, dict(preset=preset, method=method, batch=batch, seq=seq, rank=rank, gpu=gpu,
                                                                         checkpointing=ckpt, four_bit=four_bit)
    return box
