"""The course's exercises, one factory per exercise, grouped by notebook.

A notebook does ``ex = exercise_bank.lora_param_count()`` and the learner calls
``ex.check(answer)``. Reference answers and hidden-case generators live here, not in the
notebooks, so that the student versions (solutions stripped) still check properly.
"""
from __future__ import annotations

import numpy as np

from lora_edu.course.build_exercises import adapt_digits, add_lora_function, lora_linear_class, train_adapters_loop
from lora_edu.course.exercises import CriterionExercise, FunctionExercise, PredictExercise

#: notebook 05's exercises in which the learner builds LoRA (a class, functions of a model): lora_edu.course.build_exercises
BUILD_EXERCISES = (lora_linear_class, add_lora_function, train_adapters_loop, adapt_digits)

# ---------------------------------------------------------------- notebook 00


def lora_param_count() -> FunctionExercise:
    """00: LoRA's trainable parameters for one d×k weight at rank r."""
    return FunctionExercise(
        "lora_param_count",
        reference=lambda d, k, r: r * (d + k),
        example=dict(d=4096, k=4096, r=8),
        random_case=lambda rng: dict(d=int(rng.integers(8, 5000)), k=int(rng.integers(8, 5000)), r=int(rng.integers(1, 65))),
        hint="In PEFT's names (the course's): A = lora_A is r×k (r×in) and B = lora_B is d×r (out×r). "
             "Count the entries of each and add them.",
        solution="def lora_params(d, k, r):\n    return r * (d + k)",
        why="At d = k = 4096 and r = 8 that is 65,536 numbers instead of 16,777,216: this is LoRA's whole saving.",
    )


def predict_trainable() -> PredictExercise:
    """00, predict first: trainable parameters after add_lora(r=4) on fc1 and fc2 of the digits MLP."""
    def compute():
        from lora_edu.core.lora import add_lora, count_parameters
        from lora_edu.lessons.digits_task import MLP

        return count_parameters(add_lora(MLP(), ["fc1", "fc2"], r=4, alpha=8))[0]

    return PredictExercise(
        "predict_trainable",
        compute,
        rtol=0, atol=0.5,   # a count: 1,793 is not 1,792 (the default 0.1% would let it pass)
        hint="fc1 is 64 → 128 (in 64, out 128) and fc2 is 128 → 128. Each wrapped layer trains A (r×in) and B (out×r) "
             "and nothing else: its weight and its bias are frozen, and so is the unwrapped head.",
        solution="def predict_trainable():\n    return 4 * (64 + 128) + 4 * (128 + 128)   # fc1's A and B, then fc2's",
        why="Only A and B train: r·(in + out) per wrapped layer, 768 + 1,024. Biases and the head stay frozen.",
    )


# ---------------------------------------------------------------- notebook 01


def training_state_gb() -> FunctionExercise:
    """01: the popular budget of full fine-tuning, by hand: fp16 weights + fp16 grads + two fp32 moments."""
    return FunctionExercise(
        "training_state_gb",
        reference=lambda n_params: n_params * (2 + 2 + 4 + 4) / 1e9,
        example=dict(n_params=7_000_000_000),
        random_case=lambda rng: dict(n_params=int(rng.integers(10**6, 10**11))),
        rtol=1e-9,
        hint="Bytes per parameter: weight (fp16), gradient (fp16), AdamW's first and second moments (fp32 each). "
             "Multiply by the number of parameters and divide by 10⁹ for decimal GB.",
        solution="def training_state_gb(n_params):\n    return n_params * (2 + 2 + 4 + 4) / 1e9",
        why="12 bytes a parameter (the popular figure; the Transformers guide counts 18 with fp32 gradients and "
            "master weights): 84 GB for 7 × 10⁹ parameters, before a single activation is stored.",
    )


def predict_lora_activations_gb() -> PredictExercise:
    """01, predict first: LoRA's activations for LLaMA-7B at batch 8 × 2048, from their size at batch 1 × 512."""
    def compute():
        from lora_edu.core.memory import GB, estimate

        return estimate("llama-7b", method="lora", batch_size=8, seq_len=2048).activations / GB

    return PredictExercise(
        "predict_lora_activations_gb",
        compute,
        rtol=1e-3,
        hint="How many tokens is batch 8 × 2048, compared with 1 × 512? Then: does anything the forward pass keeps grow "
             "faster than the number of tokens? (The GPU's attention kernel never stores the seq × seq score matrix.)",
        solution="def predict_lora_activations_gb():\n    return 2.770 * (8 * 2048) / (1 * 512)   # linear in tokens: 32 times",
        why="Activations grow linearly with batch × sequence (32 times the tokens, 32 times the memory): the GPU's "
            "attention kernel keeps q, k, v, its output and one number per head and token, never the seq × seq scores. "
            "At 8 × 2048 they are several times LoRA's 13.5 GB of weights: LoRA shrinks gradients and optimizer state, "
            "not activations.",
    )


# ---------------------------------------------------------------- notebooks 02 and 03

#: The convention of notebooks 02-03's exercises, PEFT's, said once for their hints.
_PEFT_SHAPES = "PEFT's names: W is out×in, A (lora_A) is r×in, B (lora_B) is out×r"


def _step_case(rng: np.random.Generator) -> dict:
    """Fresh shapes and values for the worked-example exercises: y = (W + B·A)·x, one input per column of x."""
    d_in, d_out, r, n = (int(v) for v in (rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 4), rng.integers(1, 4)))
    return dict(x=rng.normal(size=(d_in, n)), W=rng.normal(size=(d_out, d_in)), A=rng.normal(size=(r, d_in)),
                B=rng.normal(size=(d_out, r)), y_true=rng.normal(size=(d_out, n)))


def delta_w() -> FunctionExercise:
    """02: ΔW = B·A, for any shapes."""
    from lora_edu.lessons.worked_example import example

    ex = example()
    return FunctionExercise(
        "delta_w",
        reference=lambda A, B: B @ A,
        example=dict(A=ex["A"], B=ex["B"]),
        random_case=lambda rng: {k: v for k, v in _step_case(rng).items() if k in ("A", "B")},
        hint=f"{_PEFT_SHAPES}. ΔW must have W's shape, out×in: which order of the two gives out×r times r×in? "
             "NumPy's matrix product is @.",
        solution="def delta_w(A, B):\n    return B @ A",
        why="ΔW has W's shape but rank at most r: it is what LoRA adds to the frozen weight.",
    )


BUGGY_TORCH_STYLE = '''def torch_style_output(x, W, A, B):
    """nn.Linear's way: x holds one input per ROW (n×in); W out×in, A (lora_A) r×in, B (lora_B) out×r."""
    base = x @ W                 # the frozen layer's output, n×out
    lora = x @ A.T @ B.T         # down to r with Aᵀ, back up with Bᵀ: n×out
    return base + lora
'''


def torch_style_output() -> FunctionExercise:
    """02, bug hunt: the layer's output on inputs stored as rows (nn.Linear's layout), with the base weight not transposed."""
    from lora_edu.lessons.worked_example import example

    ex = example()

    def case(rng):
        c = _step_case(rng)
        return dict(x=c["x"].T, W=c["W"], A=c["A"], B=c["B"])

    return FunctionExercise(
        "torch_style_output",
        reference=lambda x, W, A, B: x @ (W + B @ A).T,
        example=dict(x=ex["x"].T, W=ex["W"], A=ex["A"], B=ex["B"]),
        random_case=case,
        hint="Check each product's shapes. With inputs as rows (n×in), nn.Linear computes x·Wᵀ: W is out×in, so x·W "
             "only works when in = out, and then gives the wrong numbers. The LoRA path x·Aᵀ·Bᵀ is right.",
        solution=("def torch_style_output(x, W, A, B):\n    base = x @ W.T               # rows in, rows out: x·Wᵀ\n"
                  "    lora = x @ A.T @ B.T\n    return base + lora"),
        why="Rows in, rows out: y = x·Wᵀ + x·Aᵀ·Bᵀ is the column formula (W + B·A)·x transposed. On a square W the "
            "untransposed one runs and gives wrong numbers; only a non-square case makes the shapes complain.",
    )


def grad_b() -> FunctionExercise:
    """03: ∇B = G·Aᵀ with G = (y − y_true)·xᵀ."""
    from lora_edu.lessons.worked_example import example, gradients

    ex = example()
    return FunctionExercise(
        "grad_B",
        reference=lambda x, W, A, B, y_true: gradients(x, W, A, B, y_true)["grad_B"],
        example=ex,
        random_case=_step_case,
        hint=f"{_PEFT_SHAPES}; x is in×n (one input per column), y_true out×n. "
             "First y = (W + B·A)·x, then G = (y − y_true)·xᵀ, which is ∂L/∂W_eff (out×in). W_eff depends on B through "
             "B·A, so ∂L/∂B = G·Aᵀ (check the shapes: out×in times in×r).",
        solution="def grad_B(x, W, A, B, y_true):\n    y = (W + B @ A) @ x\n    G = (y - y_true) @ x.T\n    return G @ A.T",
        why="∇B = G·Aᵀ needs only A, which LoRA starts random: from LoRA's start (B = 0) ∇A = Bᵀ·G is zero at the "
            "first step, so B moves first and A follows.",
    )


def one_step() -> FunctionExercise:
    """03: one gradient-descent step, returning the new A and B stacked as (A_new, B_new)."""
    from lora_edu.lessons.worked_example import LEARNING_RATE, example, gradient_step

    def reference(x, W, A, B, y_true):
        s = gradient_step(x, W, A, B, y_true, lr=LEARNING_RATE)
        return np.concatenate([s["A_new"].ravel(), s["B_new"].ravel()])

    return FunctionExercise(
        "one_step",
        reference=reference,
        example=example(),
        random_case=_step_case,
        hint=f"{_PEFT_SHAPES}; x is in×n (one input per column). "
             "Compute both gradients from the *same* (old) A and B: ∇A = Bᵀ·G and ∇B = G·Aᵀ with G = (y − y_true)·xᵀ; "
             "then A − η·∇A and B − η·∇B with η = 0.1. "
             "Return np.concatenate([A_new.ravel(), B_new.ravel()]). Do not change A or B in place.",
        solution=("def one_step(x, W, A, B, y_true, lr=0.1):\n    y = (W + B @ A) @ x\n    G = (y - y_true) @ x.T\n"
                  "    A_new, B_new = A - lr * (B.T @ G), B - lr * (G @ A.T)\n"
                  "    return np.concatenate([A_new.ravel(), B_new.ravel()])"),
        why="That is all a LoRA training step is: the frozen W only shapes the error, only A and B change.",
    )


def predict_alpha_doubling() -> PredictExercise:
    """03, predict first: the factor by which doubling α grows the first change of W_eff, under SGD and under Adam."""
    def compute():
        from lora_edu.lessons import worked_example as we

        ex = we.example()
        A0, B0 = we.lora_init(*ex["W"].shape, ex["A"].shape[0])   # PEFT's start: A random, B = 0
        args = (ex["x"], ex["W"], A0, B0, ex["y_true"])
        change = {opt: [we.first_step_change(*args, s, opt, lr) for s in (1.0, 2.0)]
                  for opt, lr in (("sgd", we.LEARNING_RATE), ("adam", 0.01))}
        return [change["sgd"][1] / change["sgd"][0], change["adam"][1] / change["adam"][0]]

    return PredictExercise(
        "predict_alpha_doubling",
        compute,
        rtol=1e-3,
        hint="Under SGD, s enters twice: once in the gradient (∇B = s·G·Aᵀ), once when the step enters W_eff through "
             "s·B·A. Adam's first step is lr·∇/(|∇| + ε) ≈ lr·sign(∇): the gradient's size drops out.",
        solution="def predict_alpha_doubling():\n    return [4, 2]   # SGD: like s², Adam: like s",
        why="SGD's first change grows like s², Adam's like s: the table below measures both.",
    )


# ---------------------------------------------------------------- notebook 05


def _layer_case(rng: np.random.Generator) -> dict:
    """A fresh LoRA layer (PyTorch convention): x (batch×in), W (out×in), b (out), A (r×in), B (out×r)."""
    import torch

    d_in, d_out, r, n = (int(v) for v in (rng.integers(2, 12), rng.integers(2, 12), rng.integers(1, 5), rng.integers(1, 6)))
    t = lambda *shape: torch.tensor(rng.normal(size=shape))  # noqa: E731
    return dict(x=t(n, d_in), W=t(d_out, d_in), b=t(d_out), A=t(r, d_in), B=t(d_out, r), scaling=float(rng.uniform(0.25, 4)))


def _as_numpy(value) -> np.ndarray:
    """A tensor (or array) as a NumPy array, for references that stack results."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def lora_forward() -> FunctionExercise:
    """05: the LoRA forward pass, PyTorch convention."""
    rng = np.random.default_rng(5)
    return FunctionExercise(
        "lora_forward",
        reference=lambda x, W, b, A, B, scaling: x @ W.T + b + scaling * (x @ A.T) @ B.T,
        example=_layer_case(rng) | dict(scaling=2.0),
        random_case=_layer_case,
        hint="nn.Linear computes x·Wᵀ + b. LoRA adds scaling·(x·Aᵀ)·Bᵀ: down to r with Aᵀ, back up with Bᵀ. "
             "Computing x·Aᵀ first keeps it cheap.",
        solution="def lora_forward(x, W, b, A, B, scaling):\n    return x @ W.T + b + scaling * (x @ A.T) @ B.T",
        why="(x·Aᵀ)·Bᵀ costs r·(in + out) multiply-adds per input and never forms the out×in matrix ΔW.",
    )


def merge_weight() -> FunctionExercise:
    """05: merging: the weight a plain nn.Linear needs to compute what the LoRA layer computes."""
    rng = np.random.default_rng(6)

    def case(rng):
        c = _layer_case(rng)
        return {k: c[k] for k in ("W", "A", "B", "scaling")}

    return FunctionExercise(
        "merge_weight",
        reference=lambda W, A, B, scaling: W + scaling * B @ A,
        example=case(rng),
        random_case=case,
        hint="ΔW = scaling·B·A has W's shape (out×in). Return a new tensor: do not add into W in place.",
        solution="def merge_weight(W, A, B, scaling):\n    return W + scaling * (B @ A)",
        why="After merging, inference costs exactly what the base model costs: one matmul, no adapter.",
    )


BUGGY_MERGE = '''class LoRALayer:
    """A frozen linear layer (W out×in, b) plus scaling·B·A: A (r×in) down, B (out×r) up."""

    def __init__(self, W, b, A, B, scaling):
        self.W, self.b, self.A, self.B, self.scaling = W, b, A, B, scaling
        self.merged = False

    def merge(self):
        """Fold scaling·B·A into W, so that inference is one plain matmul."""
        self.W = self.W + self.scaling * (self.B @ self.A)
        self.merged = True

    def __call__(self, x):
        y = x @ self.W.T + self.b
        return y + self.scaling * (x @ self.A.T) @ self.B.T


def outputs_around_merge(x, W, b, A, B, scaling):
    """The layer's output before merge(), after it, and a plain matmul with the merged W: the three must be equal."""
    layer = LoRALayer(W, b, A, B, scaling)
    before = layer(x)
    layer.merge()
    return torch.stack([before, layer(x), x @ layer.W.T + layer.b])
'''


def outputs_around_merge() -> FunctionExercise:
    """05, bug hunt: a LoRA layer whose forward adds the adapter again after merging (ΔW counted twice).

    The third row, a plain matmul with the merged weight (what inference runs after merging), is there so that a
    "fix" which stops merge() from changing W (the adapter stays a separate path) does not pass: it must fold ΔW in.
    """
    rng = np.random.default_rng(7)

    def reference(x, W, b, A, B, scaling):
        y = _as_numpy(x @ W.T + b + scaling * (x @ A.T) @ B.T)
        return np.stack([y, y, y])

    return FunctionExercise(
        "outputs_around_merge",
        reference=reference,
        example=_layer_case(rng) | dict(scaling=2.0),
        random_case=_layer_case,
        hint="Compare the three rows of the output: before merging the layer is right, and so is the plain matmul with "
             "the merged W. What does merge() change, and does __call__ know about it? (The layer has a flag for exactly this.)",
        solution=("def outputs_around_merge(x, W, b, A, B, scaling):\n    import torch\n\n    class LoRALayer:\n"
                  "        def __init__(self, W, b, A, B, scaling):\n"
                  "            self.W, self.b, self.A, self.B, self.scaling = W, b, A, B, scaling\n"
                  "            self.merged = False\n\n        def merge(self):\n"
                  "            self.W = self.W + self.scaling * (self.B @ self.A)\n            self.merged = True\n\n"
                  "        def __call__(self, x):\n            y = x @ self.W.T + self.b\n"
                  "            if self.merged:          # ΔW is inside W now: adding the adapter again counts it twice\n"
                  "                return y\n            return y + self.scaling * (x @ self.A.T) @ self.B.T\n\n"
                  "    layer = LoRALayer(W, b, A, B, scaling)\n    before = layer(x)\n    layer.merge()\n"
                  "    return torch.stack([before, layer(x), x @ layer.W.T + layer.b])"),
        why="A merged layer must skip the adapter path: that is what LoRALinear's `merged` flag does, and why merging "
            "twice is an error there.",
    )


# ---------------------------------------------------------------- notebook 04


def smallest_rank() -> FunctionExercise:
    """04: the smallest rank whose best approximation reaches a relative error."""
    from lora_edu.core.lowrank import smallest_rank as reference

    def case(rng):
        n = int(rng.integers(3, 40))
        return dict(singular_values=np.sort(rng.exponential(size=n))[::-1], max_error=float(rng.uniform(0.01, 0.9)))

    return FunctionExercise(
        "smallest_rank",
        reference=lambda singular_values, max_error: reference(singular_values, max_error),
        example=dict(singular_values=np.array([4.0, 2.0, 1.0, 0.5, 0.25]), max_error=0.2),
        random_case=case,
        hint="By Eckart–Young the rank-r error is sqrt(σ²_{r+1} + σ²_{r+2} + …) / sqrt(σ²_1 + σ²_2 + …). Try r = 0, 1, 2, … "
             "and return the first r whose error is at most max_error.",
        solution=("def smallest_rank(singular_values, max_error):\n    s2 = np.asarray(singular_values, float) ** 2\n"
                  "    for r in range(len(s2) + 1):\n        if np.sqrt(s2[r:].sum() / s2.sum()) <= max_error:\n            return r"),
        why="The singular values tell you, before any training, the smallest rank that approximates this matrix "
            "to a given relative error (Eckart–Young); what rank a task needs is another question.",
    )


#: the open task of notebook 04: Adam steps the checker trains for, and how close to the budget's best loss is enough
PLAN_STEPS, PLAN_TOLERANCE = 150, 0.01
#: the largest α a plan may name: the fit's scale is α/r, and beyond this it only overflows (PEFT users stay far below)
PLAN_ALPHA_MAX = 10_000


def _hidden_target(d: int, k: int, budget: int) -> np.ndarray:
    """The target ΔW* the checker fits for one case: drawn from the case itself, never shown to the learner's function.

    Singular values decay as decayⁱ with a decay between 0.7 and 0.95, ‖ΔW*‖_F = 1 (a start loss of ½).
    """
    from lora_edu.core.lowrank import structured_update

    rng = np.random.default_rng([d, k, budget, 4])
    target = structured_update(d, k, decay=float(rng.uniform(0.7, 0.95)), seed=int(rng.integers(2**31)))
    return target / np.linalg.norm(target)


def _plan_problem(plan: np.ndarray, d: int, k: int, budget: int) -> str | None:
    """What is wrong with ``plan`` = [r, α, lr] for a d×k target under ``budget``; None when it fits well enough."""
    from lora_edu.core.lowrank import TruncatedSVD
    from lora_edu.lessons.rank_experiments import fit_lora_factors

    if plan.shape != (3,):
        return f"return three numbers [r, alpha, lr], got an answer of shape {plan.shape}."
    r, alpha, lr = (float(v) for v in plan)
    if r != round(r) or not 1 <= r <= min(d, k):
        return f"the rank r must be a whole number from 1 to min(d, k) = {min(d, k)}, got {r:g}."
    r, r_max = int(r), min(budget // (d + k), min(d, k))
    if r * (d + k) > budget:
        return f"rank {r} trains r·(d + k) = {r * (d + k):,} numbers, over the budget of {budget:,} (d = {d}, k = {k})."
    if not (0 < alpha <= PLAN_ALPHA_MAX and 0 < lr <= 1):
        return f"alpha must be in (0, {PLAN_ALPHA_MAX:,}] and lr in (0, 1], got alpha = {alpha:g}, lr = {lr:g}."
    target = _hidden_target(d, k, budget)
    loss = fit_lora_factors(target, r, alpha / r, "adam", lr, PLAN_STEPS)["loss"][-1]
    best = 0.5 * TruncatedSVD(target).relative_error(r_max) ** 2
    if not np.isfinite(loss):
        return f"with r = {r}, alpha = {alpha:g}, lr = {lr:g} the fit diverged (the loss blew up): lower the learning rate (or α)."
    if loss > best + PLAN_TOLERANCE:
        advice = (f"Rank {r_max} also fits in the budget and can get closer." if r < r_max else
                  f"The fit has not converged in {PLAN_STEPS} steps: a larger learning rate gets there sooner.")
        return (f"with r = {r}, alpha = {alpha:g}, lr = {lr:g} the loss after {PLAN_STEPS} Adam steps is {loss:.4f}; the best "
                f"the budget allows (Eckart–Young at rank {r_max}) is {best:.4f}, and the target is within "
                f"{PLAN_TOLERANCE} of it. {advice}")
    return None


def lora_plan() -> CriterionExercise:
    """04, open task: choose r, α and Adam's learning rate to fit a hidden target ΔW* within a parameter budget."""
    def case(rng):
        d, k = int(rng.integers(16, 97)), int(rng.integers(16, 97))
        r_max = int(rng.integers(1, min(d, k) // 2 + 1))
        return dict(d=d, k=k, budget=r_max * (d + k) + int(rng.integers(0, d + k)))

    return CriterionExercise(
        "lora_plan",
        criterion=_plan_problem,
        example=dict(d=64, k=48, budget=1000),
        random_case=case,
        hidden_cases=3,
        hint="Two choices. The rank: rank r trains r·(d + k) numbers, r can be at most min(d, k), and the Eckart–Young "
             "floor only falls as r grows: which r does the budget allow, for any d, k and budget? The step size: the α "
             "experiment above (Adam at le.rank_experiments.FIT_LR, α = 16) ends near its floor on a 64×64 target in 150 "
             "steps; if the check says a fit has not converged, try a larger lr.",
        solution="def lora_plan(d, k, budget):\n    r = min(budget // (d + k), d, k)\n    return [r, 16, 0.02]",
        why="Under a budget, spend it on rank (the Eckart–Young floor falls with r) and pick a step size that converges; "
            "with Adam, α and the learning rate play similar roles (Hu et al. 2021, §4.1).",
    )


# ---------------------------------------------------------------- notebook 06


def lora_qv_trainable() -> FunctionExercise:
    """06: what PEFT's printout says for LoRA on q_proj and v_proj of a LLaMA-style model."""
    return FunctionExercise(
        "lora_qv_trainable",
        reference=lambda hidden_size, num_layers, r: num_layers * 2 * r * (hidden_size + hidden_size),
        example=dict(hidden_size=4096, num_layers=32, r=8),
        random_case=lambda rng: dict(hidden_size=int(rng.integers(1, 64)) * 64, num_layers=int(rng.integers(1, 81)),
                                     r=int(rng.choice([1, 2, 4, 8, 16, 32, 64]))),
        hint="q_proj and v_proj are hidden×hidden in LLaMA (with as many key/value heads as heads). "
             "Each gets A (r×hidden) and B (hidden×r), in every layer.",
        solution="def lora_qv_trainable(hidden_size, num_layers, r):\n    return num_layers * 2 * r * (hidden_size + hidden_size)",
        why="For LLaMA-7B that is 4,194,304: the count in the much-quoted print_trainable_parameters() line, "
            "from a training run with alpaca-lora's finetune.py settings.",
    )


#: Notebook 06's bug hunt: nn.Linear's merge applied to a Conv1D weight (pitfall 1). Shown, run and fixed there.
BUGGY_MERGE_CONV1D = '''def merge_conv1d_buggy(W, A, B, scaling):
    """Merge LoRA into a GPT-2 Conv1D weight W. A is r×in (lora_A), B is out×r (lora_B)."""
    return W + scaling * (B @ A)
'''


def _conv1d_case(rng: np.random.Generator, square: bool | None = None) -> dict:
    """A Conv1D weight W (in×out, GPT-2's layout), lora_A (r×in), lora_B (out×r) and a scaling; square half the time."""
    import torch

    d_in, d_out, r = (int(v) for v in (rng.integers(2, 10), rng.integers(2, 10), rng.integers(1, 4)))
    if square if square is not None else rng.random() < 0.5:
        d_out = d_in
    t = lambda *shape: torch.tensor(rng.normal(size=shape))  # noqa: E731
    return dict(W=t(d_in, d_out), A=t(r, d_in), B=t(d_out, r), scaling=float(rng.uniform(0.25, 4)))


def merge_conv1d() -> FunctionExercise:
    """06, bug hunt: the merge of a LoRA into a transformers Conv1D weight, which is stored in×out."""
    return FunctionExercise(
        "merge_conv1d",
        reference=lambda W, A, B, scaling: W + scaling * (B @ A).T,
        example=_conv1d_case(np.random.default_rng(61), square=True),
        random_case=_conv1d_case,
        hint="A Conv1D computes x·W + b: its W is in×out, the transpose of nn.Linear's out×in. B·A is out×in "
             "(nn.Linear's layout), so it must be turned into W's layout before it is added. "
             "On a square layer the buggy sum raises no error: compare the shapes of W and B·A on a non-square one "
             "(e.g. W 3×5, A 2×3, B 5×2).",
        solution="def merge_conv1d(W, A, B, scaling):\n    return W + scaling * (B @ A).T",
        why="That transpose is what PEFT's fan_in_fan_out=True does (transpose(weight_B @ weight_A, self.fan_in_fan_out) in "
            "peft/tuners/lora/layer.py). Without it a square layer such as GPT-2's attention c_proj merges "
            "without an error and computes something else.",
    )


# ---------------------------------------------------------------- notebook 07


def _q4_1_case(rng: np.random.Generator) -> dict:
    """A random Q4_1 block: d > 0 and m as float16 bytes, then 16 bytes of two 4-bit codes each."""
    d, m = np.float16(rng.uniform(1e-4, 0.05)), np.float16(rng.uniform(-0.4, 0.0))
    codes = rng.integers(0, 256, size=16, dtype=np.uint8)
    return dict(block=np.concatenate([np.array([d, m], dtype=np.float16).view(np.uint8), codes]))


def dequantize_q4_1_block() -> FunctionExercise:
    """07: one ggml Q4_1 block (20 bytes) → its 32 weights, d·q + m."""
    from lora_edu.core.smollm2 import dequantize_q4_1

    return FunctionExercise(
        "dequantize_q4_1_block",
        reference=lambda block: dequantize_q4_1(block)[0].astype(np.float64),
        example=_q4_1_case(np.random.default_rng(7)),
        random_case=_q4_1_case,
        rtol=1e-6,
        hint="block[:4].view(np.float16) gives d and m. Byte j of block[4:] holds weight j in its low 4 bits (b & 0x0F) "
             "and weight j + 16 in its high 4 bits (b >> 4): concatenate the low halves, then the high halves. "
             "Each weight is d·q + m.",
        solution=("def dequantize_q4_1_block(block):\n    d, m = block[:4].view(np.float16).astype(np.float64)\n"
                  "    codes = np.concatenate([block[4:] & 0x0F, block[4:] >> 4])\n    return d * codes + m"),
        why="Five bits a weight (4 for the code, 32 shared bits of d and m per 32 weights): how the 98 MB file holds "
            "a 135-million-parameter model. QLoRA trains adapters on such a 4-bit base (notebook 08).",
    )


# ---------------------------------------------------------------- notebook 09


def random_subspace_similarity() -> FunctionExercise:
    """09, derive before the reveal: the paper's φ(i, j) for two subspaces drawn at random in ℝ^d, on average."""
    from lora_edu.core.subspace import random_baseline

    def case(rng):
        d = int(rng.integers(2, 2000))
        return dict(d=d, i=int(rng.integers(1, d + 1)), j=int(rng.integers(1, d + 1)))

    return FunctionExercise(
        "random_subspace_similarity",
        reference=lambda d, i, j: random_baseline(d, i, j),
        example=dict(d=128, i=8, j=64),
        random_case=case,
        hint="Take one unit vector u and a random j-dimensional subspace of ℝ^d. By symmetry each of the d coordinate "
             "directions is equally likely to be 'in' it, so on average the subspace keeps j/d of ‖u‖² = 1. The top-i "
             "subspace has i orthonormal vectors: add their squared projections, then divide by min(i, j) as φ does.",
        solution="def random_similarity(d, i, j):\n    return i * j / d / min(i, j)   # = max(i, j) / d",
        why="A measured φ means something only above this floor: 1/128 ≈ 0.008 for the top directions of notebook 09's "
            "fc2 (128 inputs), but 0.5 for i = 8, j = 64, where a random 64-dimensional subspace already holds half "
            "of every direction.",
    )


# ---------------------------------------------------------------- notebook 08


def _nf4_block_case(rng: np.random.Generator) -> dict:
    from lora_edu.core.nf4 import nf4_code_book

    size = int(rng.choice([16, 32, 64]))
    return dict(block=rng.normal(0, rng.uniform(0.01, 1.0), size=size), code=nf4_code_book().double().numpy())


def nf4_block_codes() -> FunctionExercise:
    """08: NF4-quantize one block: divide by its absmax, then the index of the nearest code book value."""
    def reference(block, code):
        scaled = block / np.abs(block).max()
        return np.abs(scaled[:, None] - code[None, :]).argmin(axis=1)

    return FunctionExercise(
        "nf4_block_codes",
        reference=reference,
        example=_nf4_block_case(np.random.default_rng(8)),
        random_case=_nf4_block_case,
        hint="Divide the block by its largest absolute value, so it lies in [-1, 1]. For each number, the answer is the "
             "position (0–15) of the code book value closest to it: np.abs(scaled[:, None] - code[None, :]) is a "
             "table of all distances; argmin along the code axis picks the nearest.",
        solution=("def nf4_block_codes(block, code):\n    scaled = block / np.abs(block).max()\n"
                  "    return np.abs(scaled[:, None] - code[None, :]).argmin(axis=1)"),
        why="Those indices, two to a byte, and one absmax per block are all that NF4 stores: 4 bits a weight plus "
            "32/64 = 0.5 bits for the scale at blocksize 64 (0.127 with double quantization).",
    )
