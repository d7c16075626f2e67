"""The rank and α experiments of notebook 04: what a rank-r LoRA learns, not only what it can represent.

Convention (the paper's and PEFT's, as in :mod:`lora_edu.core.lora`): ΔW = s·B·A with A (r×in) the
down-projection, random at the start, and B (out×r) the up-projection, **zero** at the start; the
scale s is α/r (LoRA), α/√r (rsLoRA) or a constant 2 (the "α = 2r" habit).

Three experiments, each small enough to run inside the notebook:

* :func:`lora_vs_truncation`: LoRA trained at rank r against the full fine-tuning update cut to
  rank r (truncated SVD). Eckart–Young says the cut is the best rank-r approximation *of that one
  ΔW*; it says nothing about the best rank-r update *for the task*, and the two differ.
* :func:`scaling_sweep`: fit a target matrix with s·B·A at several ranks, α and scale rules, by
  plain gradient descent or by Adam, every run trained (nothing rescaled afterwards).
* :func:`early_update_sizes`: the size of the update ‖s·B·A‖ a real network has learned after k
  steps, against r, under α/r and α/√r: the quantity rsLoRA is about.

Plus what the notebook prints around them: :func:`diverged_runs`, :func:`loss_before_training`,
:func:`lora_parameter_share`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from lora_edu.core.lora import add_lora
from lora_edu.core.lowrank import structured_update
from lora_edu.lessons import digits_task

#: scale s as a function of (α, r) for each rule the notebook compares
SCALE_RULES = {
    "alpha/r": lambda alpha, r: alpha / r,              # LoRA (Hu et al. 2021, §4.1)
    "alpha/sqrt(r)": lambda alpha, r: alpha / np.sqrt(r),  # rsLoRA (Kalajdzievski 2023)
    "alpha=2r": lambda alpha, r: 2.0,                   # α tied to r: a constant scale, whatever α says
}
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8              # torch.optim.Adam's defaults


# --------------------------------------------------------------------------------------------
# 1. LoRA against the truncated full update, on the rotated-digits task
# --------------------------------------------------------------------------------------------
def truncate_update(model: nn.Module, base: nn.Module, r: int, layers=("fc1", "fc2")) -> nn.Module:
    """A copy of ``model`` whose update W − W_base in each of ``layers`` is cut to its best rank-r part.

    Everything else (biases, other layers) stays as in ``model``: only the named weights change.
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name in layers:
            w, w0 = getattr(model, name).weight, getattr(base, name).weight
            U, S, Vh = torch.linalg.svd(w - w0, full_matrices=False)
            getattr(out, name).weight.copy_(w0 + (U[:, :r] * S[:r]) @ Vh[:r])
    return out


def lora_vs_truncation(pretrained: nn.Module, full: nn.Module, data: digits_task.Split, ranks=(1, 2, 4, 8),
                       epochs: int = 30, progress: bool = True) -> dict[str, dict[int, float]]:
    """Test accuracy of LoRA trained at rank r, and of ``full``'s update truncated to rank r.

    LoRA is trained exactly as notebook 05 trains it (:func:`digits_task.adapt`: fc1 and fc2,
    α = 2r, Adam, lr 0.01, ``epochs`` epochs); the truncation keeps the full fine-tuning update of
    the same two layers. Returns ``{"lora": {r: acc}, "truncated": {r: acc}}``. ``progress=False`` trains
    without progress bars (notebook 04 prints the table instead).
    """
    result: dict[str, dict[int, float]] = {"lora": {}, "truncated": {}}
    for r in ranks:
        result["lora"][r] = digits_task.adapt(pretrained, data, "lora", r=r, epochs=epochs, progress=progress)["accuracy"]
        result["truncated"][r] = digits_task.accuracy(truncate_update(full, pretrained, r), data.x_test, data.y_test)
    return result


# --------------------------------------------------------------------------------------------
# 2. Fitting a target matrix: plain gradient descent against Adam, every (rule, α, r) trained
# --------------------------------------------------------------------------------------------
def fit_target(d: int = 64, k: int = 64, decay: float = 0.9, seed: int = 0) -> np.ndarray:
    """The target update of the fitting experiment: singular values decaying as decay**i, ‖·‖_F = 1."""
    target = structured_update(d, k, decay=decay, seed=seed)
    return target / np.linalg.norm(target)


def fit_lora_factors(target: np.ndarray, r: int, scale: float, optimizer: str = "adam", lr: float = 0.003,
                     steps: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    """Train s·B·A to match ``target`` (loss ½‖s·B·A − target‖²) from LoRA's start: B = 0, A random.

    ``optimizer`` is "sgd" (plain gradient descent) or "adam" (the update rule of
    ``torch.optim.Adam`` with its default betas and eps, written in NumPy so that a few hundred
    runs take about a second; ``tests/core/test_rank_experiments.py`` checks it against torch).
    A is Kaiming-uniform-like (uniform in ±1/√k, as LoRA's a=√5 init). A run whose loss blows up
    is stopped and the rest of its curve is NaN. Returns ``loss`` and ``update_norm`` = ‖s·B·A‖_F,
    both before step 0 and after every step (``steps + 1`` values).
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    d, k = target.shape
    rng = np.random.default_rng(seed + r)
    params = [np.zeros((d, r)), rng.uniform(-1, 1, size=(r, k)) / np.sqrt(k)]   # [B, A]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    loss, norm = np.full(steps + 1, np.nan), np.full(steps + 1, np.nan)
    (b1, b2), start = ADAM_BETAS, 0.5 * float(np.sum(target**2))
    with np.errstate(all="ignore"):
        for t in range(steps + 1):
            B, A = params
            update = scale * B @ A
            E = update - target
            loss[t], norm[t] = 0.5 * float(np.sum(E**2)), float(np.linalg.norm(update))
            if not np.isfinite(loss[t]) or loss[t] > 100 * start:
                loss[t], norm[t] = np.nan, np.nan
                break
            if t == steps:
                break
            grads = [scale * E @ A.T, scale * B.T @ E]
            for i, g in enumerate(grads):
                if optimizer == "sgd":
                    params[i] = params[i] - lr * g
                else:
                    m[i] = b1 * m[i] + (1 - b1) * g
                    v[i] = b2 * v[i] + (1 - b2) * g**2
                    m_hat, v_hat = m[i] / (1 - b1 ** (t + 1)), v[i] / (1 - b2 ** (t + 1))
                    params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
    return {"loss": loss, "update_norm": norm}


#: learning rates of the fitting experiment: plain GD as the course first ran it, Adam at a usual size
FIT_LR = {"sgd": 0.02, "adam": 0.003}


def scaling_sweep(ranks=(1, 2, 4, 8, 16, 32, 64), alphas=(1, 2, 4, 8, 16, 32, 64),
                  rules=("alpha/r", "alpha/sqrt(r)"), optimizers=("adam", "sgd"), steps: int = 150,
                  lr: dict | None = None) -> dict:
    """Loss curves of :func:`fit_lora_factors` for every optimizer, rule, α and r: each one trained.

    Returns ``{optimizer: {rule: {alpha: {r: losses}}}}`` (losses: ``steps + 1`` values).
    """
    lr = {**FIT_LR, **(lr or {})}
    target = fit_target()
    return {opt: {rule: {alpha: {r: fit_lora_factors(target, r, SCALE_RULES[rule](alpha, r), opt, lr[opt], steps)["loss"]
                                 for r in ranks} for alpha in alphas} for rule in rules} for opt in optimizers}


def fit_table(sweep: dict, alpha: float = 16, rule: str = "alpha/r") -> str:
    """The fit's final losses at one α, under both optimizers, beside each rank's Eckart–Young floor.

    The header gives the loss at LoRA's start (B = 0), ½‖ΔW*‖² = 0.5.

    The floor is ½·(relative error of the best rank-r approximation of :func:`fit_target`)², the lowest loss
    any rank-r update reaches (the target has norm 1). Notebook 04 prints this table; it is text layout only.
    """
    from lora_edu.core.lowrank import TruncatedSVD

    target = fit_target()
    svd, ranks = TruncatedSVD(target), sorted(sweep["adam"][rule][alpha])
    start = 0.5 * np.linalg.norm(target) ** 2            # the loss at LoRA's start, B = 0: ½‖ΔW*‖²
    # "loss at start", not a bare "start": beside "s = α/r" that reads as the scale (readthrough_00_02_03_04_06.md)
    head = f"α = {alpha:g}, s = {rule.replace('alpha', 'α')} (loss at start: {start:.3f})"
    lines = [f"{head:<40}" + "".join(f"{'r=' + str(r):>7}" for r in ranks),
             f"{'floor ½·(Eckart–Young error)²':<40}" + "".join(f"{0.5 * svd.relative_error(r) ** 2:>7.3f}" for r in ranks)]
    for optimizer, label in (("adam", "Adam"), ("sgd", "plain GD")):
        lines.append(f"{label + ': loss after 150 steps':<40}" + "".join(f"{sweep[optimizer][rule][alpha][r][-1]:>7.3f}" for r in ranks))
    return "\n".join(lines)


def best_rank(curves: dict[int, np.ndarray]) -> int:
    """The rank with the lowest final loss (a diverged run, NaN, never wins)."""
    finals = {r: c[-1] for r, c in curves.items() if np.isfinite(c[-1])}
    return min(finals, key=finals.get)


# --------------------------------------------------------------------------------------------
# 3. What rsLoRA is about: the size of the learned update against r
# --------------------------------------------------------------------------------------------
def early_update_sizes(pretrained: nn.Module, data: digits_task.Split, ranks=(1, 4, 16, 64), alpha: float = 16.0,
                       steps: int = 10, rules=("alpha/r", "alpha/sqrt(r)", "alpha=2r"), optimizers=("adam", "sgd"),
                       lr: dict | None = None, layer: str = "fc2", seed: int = 0) -> dict:
    """Train LoRA (fc1, fc2) on ``data`` for ``steps`` mini-batches; measure ‖s·B·A‖_F of ``layer``.

    Same batches (64 examples each, a fixed seed), same α and learning rate (Adam 1e-3, SGD 1e-3) for
    every rank: only r and the scale rule change ("alpha=2r" ignores ``alpha``). Returns
    ``{optimizer: {rule: {r: {"update": norm, "loss": training loss after the last step}}}}``.
    """
    lr = {"adam": 1e-3, "sgd": 1e-3, **(lr or {})}
    generator = torch.Generator().manual_seed(seed)
    batches = torch.randperm(len(data.x_train), generator=generator).split(64)[:steps]
    out: dict = {}
    for opt_name in optimizers:
        out[opt_name] = {}
        for rule in rules:
            out[opt_name][rule] = {}
            for r in ranks:
                torch.manual_seed(seed)
                model = add_lora(copy.deepcopy(pretrained), ["fc1", "fc2"], r=r,
                                 alpha=2 * r if rule == "alpha=2r" else alpha, use_rslora=(rule == "alpha/sqrt(r)"))
                assert np.isclose(getattr(model, layer).scaling, SCALE_RULES[rule](alpha, r))
                params = [p for p in model.parameters() if p.requires_grad]
                opt = (torch.optim.Adam(params, lr=lr["adam"]) if opt_name == "adam"
                       else torch.optim.SGD(params, lr=lr["sgd"]))
                for batch in batches:
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    loss = nn.functional.cross_entropy(model(data.x_train), data.y_train).item()
                    update = torch.linalg.matrix_norm(getattr(model, layer).delta_weight()).item()
                out[opt_name][rule][r] = {"update": update, "loss": loss}
    return out


def diverged_runs(curves_by_alpha: dict) -> dict:
    """``{α: [ranks whose run diverged]}`` for one optimizer and rule of :func:`scaling_sweep` (only α with any).

    :func:`best_rank` skips a diverged run (its loss is NaN); this lists them so that a reader sees them.
    """
    out = {alpha: [r for r, c in curves.items() if not np.isfinite(c[-1])] for alpha, curves in curves_by_alpha.items()}
    return {alpha: ranks for alpha, ranks in out.items() if ranks}


# --------------------------------------------------------------------------------------------
# 4. Small facts the notebook prints: the loss before training, LoRA's share of the weights
# --------------------------------------------------------------------------------------------
def loss_before_training(model: nn.Module, data: digits_task.Split) -> dict[str, float]:
    """Cross-entropy, accuracy and median confidence (largest softmax probability) of ``model`` on ``data``'s training set.

    Why: the pretrained digits network is confidently wrong on rotated digits, so its cross-entropy
    (−ln of the probability it gives the right class) is far above ln 10 ≈ 2.30, a uniform guess's loss.
    """
    with torch.no_grad():
        logits = model(data.x_train)
        confidence = logits.softmax(-1).max(-1).values
        return {"loss": nn.functional.cross_entropy(logits, data.y_train).item(),
                "accuracy": (logits.argmax(-1) == data.y_train).double().mean().item(),
                "median_confidence": confidence.median().item()}


def rank_choice_table(compare: dict, real_update: np.ndarray, model: nn.Module, layers=("fc1", "fc2")) -> str:
    """Notebook 04's table for choosing r, as Markdown: LoRA's test accuracy by rank (from :func:`lora_vs_truncation`),
    its gain over the rank before, the Eckart–Young error of the real full update ``real_update`` at that rank, and
    LoRA's numbers as a share of the adapted layers' weights (:func:`lora_parameter_share`)."""
    from lora_edu.core.lowrank import TruncatedSVD

    svd, ranks = TruncatedSVD(real_update), list(compare["lora"])
    gains = [""] + [f"{100 * (compare['lora'][b] - compare['lora'][a]):+.1f} points" for a, b in zip(ranks, ranks[1:])]
    rows = [f"| {r} | {compare['lora'][r]:.1%} | {gain} | {svd.relative_error(r):.0%} "
            f"| {lora_parameter_share(model, r, layers):.0%} |" for r, gain in zip(ranks, gains)]
    return ("| rank r | LoRA test accuracy | gain over the rank before | Eckart–Young error of fc2's real ΔW "
            "| LoRA numbers, % of fc1 + fc2 weights |\n|---|---|---|---|---|\n" + "\n".join(rows))


def lora_parameter_share(model: nn.Module, r: int, layers=("fc1", "fc2")) -> float:
    """LoRA's numbers r·(in + out) per layer, summed over ``layers``, as a fraction of those layers' weights in·out."""
    shapes = [getattr(model, name).weight.shape for name in layers]
    return sum(r * (d_out + d_in) for d_out, d_in in shapes) / sum(d_out * d_in for d_out, d_in in shapes)
