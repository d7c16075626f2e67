"""The 4×4 worked example of notebooks 02 and 03, in PEFT's names, and one LoRA gradient step for any shapes.

The course's convention (PEFT's, the paper's): W is out×in and frozen; the layer computes
``y = W_eff·x`` with ``W_eff = W + s·B·A``, where ``A`` = ``lora_A`` (r×in, applied first, random at
LoRA's start), ``B`` = ``lora_B`` (out×r, applied last, zero at LoRA's start) and ``s`` = α/r. Here
``x`` holds one input per **column** (in×n) and ``y`` one output per column (out×n), as in the paper's
``h = W₀x + BAx``; PyTorch's ``nn.Linear`` takes the same inputs as rows and returns ``x·W_effᵀ``, the
same numbers transposed (notebook 02 checks it). Loss ``L = ½·Σ(y − y_true)²``.

Gradients, by the chain rule (notebook 03 derives them): ``G = ∂L/∂W_eff = (y − y_true)·xᵀ`` (out×in),
``∇A = s·Bᵀ·G`` (r×in), ``∇B = s·G·Aᵀ`` (out×r); W gets none.

**The write-up.** The example's numbers come from a write-up (unnamed: the repository does not record its
title or author) that uses row vectors, ``y = x·(W + B·A)``, with its W k×d (in×out), its B (k×r)
applied first and its A (r×d) applied last. ``WRITEUP`` and ``SOURCE_PRINTED`` keep its numbers exactly
as it prints them, in its own names; ``from_writeup`` and ``printed_in_peft_names`` translate them, once:
its row vector ``x·W_eff`` is ``W_effᵀ·x``, so PEFT's W is its Wᵀ, ``lora_A`` is its Bᵀ and ``lora_B`` is
its Aᵀ. Nothing else in the course uses its names.
"""
from __future__ import annotations

import numpy as np
import torch

LEARNING_RATE = 0.1

#: The write-up's example as it prints it, in its own row-vector names: W k×d, B k×r (applied first), A r×d.
WRITEUP = dict(
    W=((1, 0, -1, 2), (0, 1, 1, -1), (2, -2, 0, 0), (1, 1, 1, 1)),
    A=((0.1, 0.2, 0.3, 0.4), (-0.1, -0.2, 0.0, 0.1)),
    B=((1, 0), (0, 1), (0.5, -0.5), (-1, 1)),
    x=((1.0, 0.0, 0.0, 0.0),),
    y_true=((1.0, 1.0, 1.0, 1.0),),
)

#: What the write-up prints for the step, in its own names, rounded as printed (it prints no updated B).
#: Its y and L hold; the rest is checked in notebook 03 (``printed_in_peft_names`` translates it).
SOURCE_PRINTED = dict(
    y=np.array([[1.1, 0.2, -0.7, 2.4]]),
    loss=2.75,
    grad_A=np.array([[0.1, 0.2, -1.7, 1.4], [0, 0, 0, 0]]),
    grad_B=np.array([[0.01, -0.01], [0.02, -0.02], [-0.17, 0.17], [0.14, -0.14]]),
    A_new=np.array([[0.09, 0.18, 0.47, 0.26], [-0.10, -0.20, 0.00, 0.10]]),
    W_eff_new=np.array([[1.09, 0.18, -0.53, 2.26], [-0.10, 0.80, 1.00, -0.90], [2.10, -1.80, 0.24, 0.08], [0.81, 0.62, 0.52, 0.84]]),
)

#: The translation, name by name: the write-up's name -> (PEFT's name, how it is obtained).
TRANSLATION = {
    "W (k×d, in×out)": ("W (out×in)", "its Wᵀ"),
    "B (k×r, applied first)": ("A = lora_A (r×in)", "its Bᵀ"),
    "A (r×d, applied last)": ("B = lora_B (out×r)", "its Aᵀ"),
    "x (1×k, a row)": ("x (in×1, a column)", "its xᵀ"),
    "y = x·W_eff (a row)": ("y = W_eff·x (a column)", "its yᵀ"),
}


def writeup() -> dict[str, np.ndarray]:
    """Fresh float copies of the write-up's matrices, in its own (row-vector) names."""
    return {name: np.array(value, dtype=float) for name, value in WRITEUP.items()}


def writeup_output(w: dict) -> np.ndarray:
    """The write-up's own forward pass, y = x·(W + B·A), in its names (used only to check the translation)."""
    return w["x"] @ (w["W"] + w["B"] @ w["A"])


def from_writeup(w: dict) -> dict[str, np.ndarray]:
    """The write-up's row-vector example in PEFT's names: W = its Wᵀ, A = its Bᵀ, B = its Aᵀ, x and y_true as columns.

    Its y = x·(W + B·A) is a row; transposed, yᵀ = (Wᵀ + Aᵀ·Bᵀ)·xᵀ, which is PEFT's (W + B·A)·x in the new names.
    """
    missing = sorted({"W", "A", "B", "x", "y_true"} - set(w))
    if missing:
        raise ValueError(f"the write-up's example needs W, A, B, x and y_true in its own names; missing {missing}")
    w = {k: np.asarray(v, dtype=float) for k, v in w.items()}
    return dict(W=w["W"].T.copy(), A=w["B"].T.copy(), B=w["A"].T.copy(), x=w["x"].T.copy(), y_true=w["y_true"].T.copy())


def example() -> dict[str, np.ndarray]:
    """Fresh copies of the 4×4 example in PEFT's names (change them freely): W, A (lora_A), B (lora_B), x, y_true."""
    return from_writeup(writeup())


def printed_in_peft_names(printed: dict | None = None) -> dict:
    """The write-up's printed step, translated: its ∇A is our ∇Bᵀ, its ∇B our ∇Aᵀ, its A_new our B_newᵀ, W_eff,new transposed.

    Entry [i, j] of one of its matrices is entry [j, i] of ours.
    """
    p = SOURCE_PRINTED if printed is None else printed
    return dict(y=np.asarray(p["y"]).T, loss=p["loss"], grad_A=np.asarray(p["grad_B"]).T, grad_B=np.asarray(p["grad_A"]).T,
                B_new=np.asarray(p["A_new"]).T, W_eff_new=np.asarray(p["W_eff_new"]).T)


def _check_shapes(x, W, A, B, y_true=None) -> None:
    out, inp = W.shape
    r = A.shape[0]
    problems = []
    if A.shape != (r, inp):
        problems.append(f"A (lora_A) must be r×in = r×{inp}, got {A.shape}")
    if B.shape != (out, r):
        problems.append(f"B (lora_B) must be out×r = {out}×{r} (r from A), got {B.shape}")
    if x.ndim != 2 or x.shape[0] != inp:
        problems.append(f"x must be in×n = {inp}×n (one input per column), got {x.shape}")
    if y_true is not None and y_true.shape != (out, x.shape[1]):
        problems.append(f"y_true must be out×n = {out}×{x.shape[1]}, got {y_true.shape}")
    if problems:
        raise ValueError("; ".join(problems) + ". Convention: y = (W + s·B·A)·x with W out×in.")


def forward(x, W, A, B, scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(W_eff, y): the effective weight W + s·B·A and the output W_eff·x."""
    _check_shapes(x, W, A, B)
    W_eff = W + scaling * B @ A
    return W_eff, W_eff @ x


def loss(y, y_true) -> float:
    """½·Σ(y − y_true)²."""
    return float(0.5 * np.sum((y - y_true) ** 2))


def gradients(x, W, A, B, y_true, scaling: float = 1.0) -> dict:
    """The loss and its gradients with respect to W_eff (G), A and B."""
    _check_shapes(x, W, A, B, y_true)
    W_eff, y = forward(x, W, A, B, scaling)
    G = (y - y_true) @ x.T
    return dict(W_eff=W_eff, y=y, loss=loss(y, y_true), G=G, grad_A=scaling * B.T @ G, grad_B=scaling * G @ A.T)


def gradient_step(x, W, A, B, y_true, lr: float = LEARNING_RATE, scaling: float = 1.0) -> dict:
    """One step of gradient descent on A and B (W frozen); every intermediate value, for any shapes.

    Returns numpy arrays ``G``, ``grad_A``, ``grad_B``, ``A_new``, ``B_new``, ``W_eff``,
    ``W_eff_new``, ``y``, ``y_new`` and floats ``loss_before``, ``loss_after``. Inputs are not changed.
    """
    x, W, A, B, y_true = (np.asarray(v, dtype=float) for v in (x, W, A, B, y_true))
    g = gradients(x, W, A, B, y_true, scaling)
    A_new, B_new = A - lr * g["grad_A"], B - lr * g["grad_B"]
    W_eff_new, y_new = forward(x, W, A_new, B_new, scaling)
    return dict(G=g["G"], grad_A=g["grad_A"], grad_B=g["grad_B"], A_new=A_new, B_new=B_new, W_eff=g["W_eff"],
                W_eff_new=W_eff_new, y=g["y"], y_new=y_new, loss_before=g["loss"], loss_after=loss(y_new, y_true))


def train(x, W, A, B, y_true, lr: float = LEARNING_RATE, steps: int = 40, scaling: float = 1.0) -> list[float]:
    """Loss before each of ``steps`` gradient steps, then after the last."""
    losses = []
    for _ in range(steps):
        s = gradient_step(x, W, A, B, y_true, lr, scaling)
        losses.append(s["loss_before"])
        A, B = s["A_new"], s["B_new"]
    return losses + [s["loss_after"]]


def finite_difference(f, M: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(M + ε·e) − f(M − ε·e)) / 2ε for each entry of M: a check on any gradient."""
    grad = np.zeros_like(M, dtype=float)
    for idx in np.ndindex(M.shape):
        plus, minus = M.astype(float), M.astype(float)
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad


def errata(printed: dict, correct: dict, decimals: int = 2) -> list[dict]:
    """Entries where a printed value is off by more than its own rounding (half a unit of ``decimals``).

    Returns one dict per wrong entry: which matrix, the index, printed value, correct value, difference.
    """
    tol = 0.5 * 10.0**-decimals + 1e-9
    wrong = []
    for name, shown in printed.items():
        shown, right = np.atleast_1d(np.asarray(shown, dtype=float)), np.atleast_1d(np.asarray(correct[name], dtype=float))
        if shown.shape != right.shape:
            raise ValueError(f"{name}: printed shape {shown.shape} but correct shape {right.shape}: compare in the same names")
        for idx in np.ndindex(shown.shape):
            if abs(shown[idx] - right[idx]) > tol:
                wrong.append(dict(name=name, index=idx, printed=float(shown[idx]), correct=float(right[idx]),
                                  difference=float(shown[idx] - right[idx])))
    return wrong


def lora_init(d_out: int, d_in: int, r: int, zero: str = "B", std: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with the matrix named by ``zero`` all zeros and the other Gaussian (std ``std``).

    ``zero="B"`` zeros ``lora_B`` (out×r, applied last): LoRA's and PEFT's default for linear layers.
    ``zero="A"`` zeros ``lora_A`` (r×in, applied first) instead. Both give ΔW = B·A = 0, so training starts from W.
    """
    if zero not in ("A", "B"):
        raise ValueError(f"zero must be 'B' (lora_B, PEFT's default) or 'A' (lora_A), got {zero!r}")
    rng = np.random.default_rng(seed)
    A, B = rng.normal(scale=std, size=(r, d_in)), rng.normal(scale=std, size=(d_out, r))
    if zero == "A":
        A = np.zeros_like(A)
    else:
        B = np.zeros_like(B)
    return A, B


def zero_gradient(x, W, A, B, y_true, scaling: float = 1.0) -> list[str]:
    """Names of the trainable matrices ("A", "B") whose gradient is exactly zero at this point.

    ∇A = s·Bᵀ·G and ∇B = s·G·Aᵀ: whichever matrix starts at zero makes the *other* one's gradient zero,
    so the zeroed matrix is the one that moves first.
    """
    g = gradients(*(np.asarray(v, dtype=float) for v in (x, W, A, B, y_true)), scaling=scaling)
    return [name for name in ("A", "B") if not g[f"grad_{name}"].any()]


def trajectory(x, W, A, B, y_true, scaling: float, optimizer: str = "adam", lr: float = 0.01, steps: int = 20) -> np.ndarray:
    """W_eff = W + s·B·A after each of ``steps`` steps of ``torch.optim.SGD`` or ``Adam`` on A and B: (steps, out, in).

    PyTorch's own optimizers (Adam's defaults: betas (0.9, 0.999), eps 1e-8), so what is compared is what a
    training loop does; W is frozen and the inputs are not changed.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    opt_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    xt, Wt, yt = (torch.tensor(np.asarray(v, dtype=float)) for v in (x, W, y_true))
    At = torch.tensor(np.asarray(A, dtype=float), requires_grad=True)
    Bt = torch.tensor(np.asarray(B, dtype=float), requires_grad=True)
    opt = opt_class([At, Bt], lr=lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (((Wt + scaling * Bt @ At) @ xt - yt) ** 2).sum()).backward()
        opt.step()
        with torch.no_grad():
            out.append((Wt + scaling * Bt @ At).numpy().copy())
    return np.array(out)


def equivalent_at_scale_one(A, B, scaling: float, optimizer: str, lr: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(A', B', lr'): the run at s = 1 whose W_eff equals the run at scale s at *every* step.

    s·B·A = (√s·B)·(√s·A), so start from √s times the initial matrices. The gradient with respect to √s·A
    is 1/√s times that with respect to A. SGD then needs lr' = s·lr for the new matrices to stay √s times
    the old ones; Adam ignores the gradient's size (up to eps), so lr' = √s·lr. This is the "if we scale the
    initialization appropriately" of Hu et al. (2021, §4.1): changing s alone is like changing the learning
    rate only on the first step from B = 0 (see ``first_step_change``).
    """
    root = float(np.sqrt(scaling))
    factor = {"sgd": scaling, "adam": root}[optimizer]
    return root * np.asarray(A, dtype=float), root * np.asarray(B, dtype=float), factor * lr


def swapped_grad_A(x, B, error) -> np.ndarray:
    """Bᵀ·x·ẽᵀ: ∇A with the roles of x and the error swapped (the correct one is Bᵀ·ẽ·xᵀ = Bᵀ·G).

    ``error`` is an out×1 column. Bᵀ·x exists only because in = out; the write-up's printed gradient of its
    B, translated into PEFT's names (our ∇A), is exactly this with ẽ its own error (notebook 03's deep dive).
    """
    B, x, error = (np.asarray(v, dtype=float) for v in (B, x, error))
    return B.T @ x @ error.T


def first_step_change(x, W, A, B, y_true, scaling: float, optimizer: str = "sgd", lr: float = LEARNING_RATE) -> float:
    """Frobenius norm of the change of W_eff = W + s·B·A after one step of ``torch.optim.SGD`` or ``Adam``.

    Uses PyTorch's own optimizers (default Adam settings: betas (0.9, 0.999), eps 1e-8), so what is
    measured is what a training loop does. Inputs are not changed.

    Why the two differ: SGD's step is η·∇, and ∇ carries one factor s; the step then enters W_eff through
    s·B·A, a second factor: the change grows like s². Adam's first step is lr·m̂/(√v̂ + ε) = lr·∇/(|∇| + ε),
    about lr·sign(∇) whatever the gradient's size, so only the outer factor s is left: the change grows like s.
    This holds for the first step only; ``equivalent_at_scale_one`` gives the rule that holds at every step.
    """
    before = np.asarray(W, dtype=float) + scaling * np.asarray(B, dtype=float) @ np.asarray(A, dtype=float)
    after = trajectory(x, W, A, B, y_true, scaling, optimizer, lr, steps=1)[0]
    return float(np.linalg.norm(after - before))


def side_by_side(matrices: dict, decimals: int = 4) -> str:
    """The matrices next to each other, each under its name and shape: notebook 02 shows the whole example in a few lines.

    Every entry is printed (NumPy's own formatting at ``decimals``), so nothing of the example is hidden; rows are
    aligned at the top and a shorter matrix leaves blanks below it.
    """
    if not matrices:
        raise ValueError("side_by_side needs at least one matrix: pass a dict such as {'W': W, 'A': A}")
    blocks = []
    for name, m in matrices.items():
        m = np.atleast_2d(np.asarray(m, dtype=float))
        if m.ndim != 2:
            raise ValueError(f"side_by_side prints 2-D matrices; {name!r} has shape {m.shape} (reshape it to rows × columns)")
        rows = np.array2string(m, precision=decimals, suppress_small=True).replace("[[", " [").replace("]]", "]").split("\n")
        rows = [row.strip() for row in rows]
        blocks.append([f"{name} {m.shape[0]}×{m.shape[1]}", *rows])
    widths = [max(len(line) for line in block) for block in blocks]
    height = max(len(block) for block in blocks)
    return "\n".join("   ".join((block[i] if i < len(block) else "").ljust(w) for block, w in zip(blocks, widths)).rstrip()
                     for i in range(height))


def gradient_gaps(x, W, A, B, y_true, grad_A, grad_B) -> dict[str, float]:
    """Largest difference between hand-derived ∇A, ∇B (s = 1) and two checks: PyTorch's autograd and finite differences.

    Notebook 03 derives the gradients by the chain rule; this is the check that needs no calculus: autograd on the
    same loss ½·Σ((W + B·A)·x − y_true)², and central differences entry by entry (``finite_difference``).
    """
    x, W, A, B, y_true = (np.asarray(v, dtype=float) for v in (x, W, A, B, y_true))
    _check_shapes(x, W, A, B, y_true)
    At, Bt = torch.tensor(A, requires_grad=True), torch.tensor(B, requires_grad=True)
    y_t = (torch.tensor(W) + Bt @ At) @ torch.tensor(x)
    (0.5 * ((y_t - torch.tensor(y_true)) ** 2).sum()).backward()
    fd_A = finite_difference(lambda A_: loss((W + B @ A_) @ x, y_true), A)
    fd_B = finite_difference(lambda B_: loss((W + B_ @ A) @ x, y_true), B)
    return dict(autograd=float(max(np.abs(grad_A - At.grad.numpy()).max(), np.abs(grad_B - Bt.grad.numpy()).max())),
                finite_differences=float(max(np.abs(grad_A - fd_A).max(), np.abs(grad_B - fd_B).max())))


def alpha_table(x, W, A, B, y_true, lrs: dict, alphas=(1, 2, 4, 8)) -> str:
    """Notebook 03's table: the first change of W_eff (``first_step_change``) under SGD and Adam as α doubles.

    ``lrs`` maps ``"sgd"`` and ``"adam"`` to their learning rates; r is A's number of rows, s = α/r. Each row also
    gives the change over the previous α's, the factor the learner predicts (4 under SGD, 2 under Adam).
    """
    if set(lrs) != {"sgd", "adam"}:
        raise ValueError(f"alpha_table needs learning rates for 'sgd' and 'adam', got {sorted(lrs)}: pass lrs={{'sgd': 0.1, 'adam': 0.01}}")
    r = np.asarray(A).shape[0]
    lines = [f"{'α':>4} {'s = α/r':>8} {'SGD ‖ΔW_eff‖':>13} {'× previous':>10} {'Adam ‖ΔW_eff‖':>14} {'× previous':>10}"]
    previous = {}
    for alpha in alphas:
        row = f"{alpha:>4} {alpha / r:>8.2f}"
        for opt, width in (("sgd", 13), ("adam", 14)):
            change = first_step_change(x, W, A, B, y_true, alpha / r, opt, lrs[opt])
            row += f" {change:>{width}.4f} {f'{change / previous[opt]:.2f}' if opt in previous else '':>10}"
            previous[opt] = change
        lines.append(row)
    return "\n".join(lines)


def first_moves(x, W, y_true, starts: dict) -> str:
    """Notebook 03's report on LoRA's two zero starts: one line per start, ``{label: (A, B)}``.

    Each line says whether ΔW = B·A is zero at the start, the sizes of ∇A and ∇B there, and which matrix
    moves on the first step (the one whose gradient is not zero: see :func:`zero_gradient`).
    """
    lines = []
    for what, (A, B) in starts.items():
        g = gradients(x, W, A, B, y_true)
        still = zero_gradient(x, W, A, B, y_true)
        lines.append(f"{what}: ΔW = 0 at start: {not (B @ A).any()} | |∇A| = {np.linalg.norm(g['grad_A']):.4f}, "
                     f"|∇B| = {np.linalg.norm(g['grad_B']):.4f} | moves first: {[m for m in ('A', 'B') if m not in still]}")
    return "\n".join(lines)


def as_lora_linear(W, A, B):
    """Notebook 02's example as PyTorch modules: ``LoRALinear(nn.Linear(in, out, bias=False), r, alpha=r)``.

    The weights go in as they are (``weight`` = W out×in, ``lora_A`` = A r×in, ``lora_B`` = B out×r), in
    float64, with α = r so that the scale α/r is 1, as in the example. Only the input changes: the layer takes rows.
    """
    from lora_edu.core.lora import LoRALinear

    W, A, B = (np.asarray(m, dtype=float) for m in (W, A, B))
    _check_shapes(np.zeros((W.shape[1], 1)), W, A, B)
    base = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
    lora = LoRALinear(base, r=A.shape[0], alpha=A.shape[0])
    with torch.no_grad():
        for param, value in ((base.weight, W), (lora.lora_A, A), (lora.lora_B, B)):
            param.copy_(torch.from_numpy(value))
    return lora
