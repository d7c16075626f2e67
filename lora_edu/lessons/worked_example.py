"""The 4×4 worked example of notebooks 02 and 03, and one LoRA gradient step for any shapes.

Convention of the source write-up (row vectors): ``y = x · W_eff`` with ``W_eff = W + s·B·A``,
W (k×d) frozen, B (k×r), A (r×d), loss ``L = ½·Σ(y − y_true)²``, plain gradient descent with
learning rate η. ``s`` is LoRA's scale α/r (1 in the source). x meets B first, so **B is the
down-projection** (k → r) and **A the up-projection** (r → d). In PyTorch's and PEFT's convention
(notebook 02 maps it) this B is ``lora_A``ᵀ and this A is ``lora_B``ᵀ. LoRA's default for linear layers
zeros the matrix applied last (Hu et al. 2021, §4.1: B = 0 in h = W₀x + BAx; PEFT's ``init_lora_weights=True``:
``lora_B`` = 0), which here is **A**:
``lora_init(..., zero="A")``.

Gradients, by the chain rule (notebook 03 derives them):
``G = ∂L/∂W_eff = xᵀ·(y − y_true)``, ``∇B = s·G·Aᵀ``, ``∇A = s·Bᵀ·G``; W gets none.
"""
from __future__ import annotations

import numpy as np
import torch

LEARNING_RATE = 0.1

#: What each matrix of the row-vector example does, and its name in PyTorch's and PEFT's convention.
ROLES = {
    "B": "k×r, applied first: the down-projection (PEFT's lora_A is Bᵀ)",
    "A": "r×d, applied last: the up-projection (PEFT's lora_B is Aᵀ)",
}


def example() -> dict[str, np.ndarray]:
    """Fresh copies of the source's matrices (change them freely)."""
    return dict(
        W=np.array([[1, 0, -1, 2], [0, 1, 1, -1], [2, -2, 0, 0], [1, 1, 1, 1]], dtype=float),
        A=np.array([[0.1, 0.2, 0.3, 0.4], [-0.1, -0.2, 0.0, 0.1]]),
        B=np.array([[1, 0], [0, 1], [0.5, -0.5], [-1, 1]], dtype=float),
        x=np.array([[1.0, 0.0, 0.0, 0.0]]),
        y_true=np.array([[1.0, 1.0, 1.0, 1.0]]),
    )


#: What the source prints for the step (rounded as printed). Its y and L hold; the rest is checked in notebook 03.
SOURCE_PRINTED = dict(
    y=np.array([[1.1, 0.2, -0.7, 2.4]]),
    loss=2.75,
    grad_A=np.array([[0.1, 0.2, -1.7, 1.4], [0, 0, 0, 0]]),
    grad_B=np.array([[0.01, -0.01], [0.02, -0.02], [-0.17, 0.17], [0.14, -0.14]]),
    A_new=np.array([[0.09, 0.18, 0.47, 0.26], [-0.10, -0.20, 0.00, 0.10]]),
    W_eff_new=np.array([[1.09, 0.18, -0.53, 2.26], [-0.10, 0.80, 1.00, -0.90], [2.10, -1.80, 0.24, 0.08], [0.81, 0.62, 0.52, 0.84]]),
)


def _check_shapes(x, W, A, B, y_true=None) -> None:
    k, d = W.shape
    r = A.shape[0]
    problems = []
    if A.shape != (r, d):
        problems.append(f"A must be r×d = r×{d}, got {A.shape}")
    if B.shape != (k, r):
        problems.append(f"B must be k×r = {k}×{r} (r from A), got {B.shape}")
    if x.ndim != 2 or x.shape[1] != k:
        problems.append(f"x must be n×k = n×{k} (rows are inputs), got {x.shape}")
    if y_true is not None and y_true.shape != (x.shape[0], d):
        problems.append(f"y_true must be n×d = {x.shape[0]}×{d}, got {y_true.shape}")
    if problems:
        raise ValueError("; ".join(problems) + ". Convention: y = x·(W + s·B·A) with W k×d.")


def forward(x, W, A, B, scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(W_eff, y): the effective weight and the output."""
    _check_shapes(x, W, A, B)
    W_eff = W + scaling * B @ A
    return W_eff, x @ W_eff


def loss(y, y_true) -> float:
    """½·Σ(y − y_true)²."""
    return float(0.5 * np.sum((y - y_true) ** 2))


def gradients(x, W, A, B, y_true, scaling: float = 1.0) -> dict:
    """The loss and its gradients with respect to W_eff (G), A and B."""
    _check_shapes(x, W, A, B, y_true)
    W_eff, y = forward(x, W, A, B, scaling)
    G = x.T @ (y - y_true)
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
        for idx in np.ndindex(shown.shape):
            if abs(shown[idx] - right[idx]) > tol:
                wrong.append(dict(name=name, index=idx, printed=float(shown[idx]), correct=float(right[idx]),
                                  difference=float(shown[idx] - right[idx])))
    return wrong


def lora_init(k: int, d: int, r: int, zero: str = "A", std: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with the matrix named by ``zero`` all zeros and the other Gaussian (std ``std``).

    ``zero="A"`` zeros the up-projection (applied last): LoRA's and PEFT's choice, in this convention.
    ``zero="B"`` zeros the down-projection instead. Both give ΔW = B·A = 0, so training starts from W.
    """
    if zero not in ("A", "B"):
        raise ValueError(f"zero must be 'A' (the up-projection, LoRA's choice here) or 'B', got {zero!r}")
    rng = np.random.default_rng(seed)
    A, B = rng.normal(scale=std, size=(r, d)), rng.normal(scale=std, size=(k, r))
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
    """W_eff = W + s·B·A after each of ``steps`` steps of ``torch.optim.SGD`` or ``Adam`` on A and B: (steps, k, d).

    PyTorch's own optimizers (Adam's defaults: betas (0.9, 0.999), eps 1e-8), so what is compared is what a
    training loop does; W is frozen and the inputs are not changed.
    """
    opt_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    xt, Wt, yt = (torch.tensor(np.asarray(v, dtype=float)) for v in (x, W, y_true))
    At = torch.tensor(np.asarray(A, dtype=float), requires_grad=True)
    Bt = torch.tensor(np.asarray(B, dtype=float), requires_grad=True)
    opt = opt_class([At, Bt], lr=lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((xt @ (Wt + scaling * Bt @ At) - yt) ** 2).sum()).backward()
        opt.step()
        with torch.no_grad():
            out.append((Wt + scaling * Bt @ At).numpy().copy())
    return np.array(out)


def equivalent_at_scale_one(A, B, scaling: float, optimizer: str, lr: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(A', B', lr'): the run at s = 1 whose W_eff equals the run at scale s at *every* step.

    s·B·A = (√s·B)·(√s·A), so start from √s times the initial matrices. The gradient with respect to √s·B
    is 1/√s times that with respect to B. SGD then needs lr' = s·lr for the new matrices to stay √s times
    the old ones; Adam ignores the gradient's size (up to eps), so lr' = √s·lr. This is the "if we scale the
    initialization appropriately" of Hu et al. (2021, §4.1): changing s alone is like changing the learning
    rate only on the first step from A = 0 (see ``first_step_change``).
    """
    root = float(np.sqrt(scaling))
    factor = {"sgd": scaling, "adam": root}[optimizer]
    return root * np.asarray(A, dtype=float), root * np.asarray(B, dtype=float), factor * lr


def swapped_grad_B(x, A, error_row) -> np.ndarray:
    """ẽᵀ·(x·Aᵀ): ∇B with the roles of x and the error swapped (the correct one is xᵀ·(ẽ·Aᵀ) = G·Aᵀ).

    Both are k×r only because k = d; the source's printed ∇B is exactly this, with ẽ its own error row
    (notebook 03).
    """
    return np.asarray(error_row, dtype=float).T @ (np.asarray(x, dtype=float) @ np.asarray(A, dtype=float).T)


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
