"""The LoRA paper's analyses on the course's digits MLP (notebook 09), trained many at a time.

Notebook 09 needs 25 distinct fine-tuning runs of the digits MLP (``fc1`` 64→128, ``fc2`` 128→128,
``head`` 128→10; :mod:`lora_edu.lessons.digits_task`): which layers × which rank, a fixed parameter
budget, two seeds at r = 8 and r = 64, full fine-tuning. One at a time, most of their time would be
Python overhead per step on matrices this small. :func:`train_runs` trains them
*together*: the runs of one rank are stacked along a leading "run" axis and trained as one batched
model. Nothing is shared between runs but the frozen base weights: each keeps its own A and B,
its own mini-batch order and its own Adam state (Adam is element-wise, and the summed loss gives
each run the gradient of its own loss). A run that does not adapt a layer holds A = B = 0 there;
both gradients are then exactly zero, so Adam never moves them and the layer stays the frozen one.
For the same reason a run of a lower rank than its stack's holds zero rows of A and zero columns of B
beyond its rank (its LoRA is exactly rank r), and layers that no run of a stack adapts (those before
its first adapted layer) are computed once for the whole data set, not once per epoch.

Each run is what :func:`digits_task.adapt` would train (checked in ``tests/core/test_paper_analyses.py``):
LoRA with α = 2r on the named layers, A = ``lora_A`` (r×in, the down-projection, Kaiming-uniform,
drawn exactly as :func:`lora_edu.core.lora.add_lora` draws it after ``torch.manual_seed(seed)``),
B = ``lora_B`` (out×r, the up-projection, zero at the start); Adam with lr 0.01, mini-batches of
128 in the order ``torch.Generator().manual_seed(seed)`` gives, float64. "Full" trains every weight
and bias, as full fine-tuning does.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lora_edu.lessons import digits_task

LAYERS = ("fc1", "fc2", "head")
FULL = "full"


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: LoRA of rank ``r`` on ``targets`` (a subset of :data:`LAYERS`), or full fine-tuning."""
    targets: tuple[str, ...]
    r: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.targets == (FULL,):
            if self.r is not None:
                raise ValueError("full fine-tuning has no rank: use RunSpec(('full',)) with r=None.")
            return
        if not self.targets or any(t not in LAYERS for t in self.targets) or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must be distinct names from {LAYERS} (or ('full',)), got {self.targets!r}.")
        if tuple(t for t in LAYERS if t in self.targets) != self.targets:
            raise ValueError(f"list targets in the model's order {LAYERS}, got {self.targets!r}: one run, one spelling.")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive int for a LoRA run, got {self.r!r}.")

    @property
    def label(self) -> str:
        return "full fine-tuning" if self.targets == (FULL,) else f"{'+'.join(self.targets)} r={self.r}"


#: The study behind notebook 09's tables (``benchmarks/bench_paper_analyses.py`` trains it once, 3 seeds, and stores
#: it in ``lora_edu/data/paper_analyses_study.json``): too long for the notebook's 30 s, so the notebook reads it.
STUDY_SEEDS = (0, 1, 2)
#: Long enough that nearly every run has stopped improving (the notebook counts those that have not).
STUDY_EPOCHS = 300
#: Every epoch up to 30 (the early trade-off between learning and forgetting moves fast), then sparser.
STUDY_EVAL_EPOCHS = tuple(range(1, 31)) + (40, 50, 60, 75, 100, 125, 150, 200, 250, 300)
#: The expressivity grid: target sets (rows) × ranks (columns), the paper's Table 6 design.
GRID_ROWS = (("head",), ("fc2",), ("fc1",), ("fc1", "fc2"), ("fc1", "fc2", "head"))
GRID_RANKS = (1, 4, 16)
#: The fixed budget of trainable numbers (the paper's Table 5 design): `fc2` alone at r = 8.
BUDGET = 2048
#: Learning against forgetting: `fc2` alone at these ranks, and every layer (the setting full fine-tuning has).
FORGET_RANKS = (1, 4, 8, 16, 64)
ALL_LAYERS = ("fc1", "fc2", "head")
ALL_LAYER_RANKS = (4, 16, 64)
#: notebook 05's learning rate, and a ten times smaller one for the matched comparison of forgetting.
STUDY_LRS = (1e-2, 1e-3)


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(in, out) of each of :data:`LAYERS`."""
    return {name: (getattr(model, name).in_features, getattr(model, name).out_features) for name in LAYERS}


def trainable_count(spec: RunSpec, shapes: dict[str, tuple[int, int]]) -> int:
    """Trainable numbers of a run: r·(in + out) per adapted layer, or every weight and bias for full fine-tuning."""
    if spec.targets == (FULL,):
        return sum(d_in * d_out + d_out for d_in, d_out in shapes.values())
    return sum(spec.r * sum(shapes[name]) for name in spec.targets)


def all_target_sets() -> list[tuple[str, ...]]:
    """The seven non-empty subsets of :data:`LAYERS`, smallest first, in the model's order."""
    return [c for k in range(1, len(LAYERS) + 1) for c in itertools.combinations(LAYERS, k)]


def rank_for_budget(targets: tuple[str, ...], budget: int, shapes: dict[str, tuple[int, int]]) -> int:
    """The largest useful r whose LoRA on ``targets`` stays within ``budget`` trainable numbers (at least 1).

    "Useful": never above the smallest min(in, out) of the targets, since ΔW = B·A of an out×in
    layer cannot have a higher rank (the 10-class head: 10), so a larger r only adds numbers.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int (trainable numbers), got {budget!r}.")
    useful = min(min(shapes[name]) for name in targets)
    return max(1, min(useful, budget // sum(sum(shapes[name]) for name in targets)))


def budget_specs(budget: int, shapes: dict[str, tuple[int, int]], seed: int = 0) -> list[RunSpec]:
    """One run per target set (:func:`all_target_sets`) at the largest rank within ``budget``: the paper's Table 5 design."""
    return [RunSpec(t, rank_for_budget(t, budget, shapes), seed) for t in all_target_sets()]


def grid_specs(rows, ranks, seed: int = 0) -> list[RunSpec]:
    """Every target set of ``rows`` at every rank of ``ranks``: the expressivity grid (paper's Table 6 design)."""
    return [RunSpec(tuple(t), r, seed) for t in rows for r in ranks]


def by_spec(results: list[dict]) -> dict[RunSpec, dict]:
    """:func:`train_runs`'s results keyed by their :class:`RunSpec`, to look runs up by what they are."""
    return {res["spec"]: res for res in results}


def _lora_init(base: nn.Module, spec: RunSpec, rank: int) -> dict[str, torch.Tensor]:
    """A for every layer, padded to ``rank`` rows with zeros; drawn as add_lora draws it after manual_seed(seed).

    add_lora wraps the targets in the model's order and each LoRALinear draws its A with
    ``kaiming_uniform_(a=√5)``, so drawing the same shapes in the same order gives the same numbers.
    """
    torch.manual_seed(spec.seed)
    out = {}
    for name in LAYERS:
        d_in, _ = layer_shapes(base)[name]
        A = torch.zeros(rank, d_in, dtype=digits_task.DTYPE)
        if name in spec.targets:
            a = torch.empty(spec.r, d_in, dtype=digits_task.DTYPE)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            A[: spec.r] = a
        out[name] = A
    return out


def initial_A(base: nn.Module, spec: RunSpec) -> dict[str, np.ndarray]:
    """The A (``lora_A``, r×in) each adapted layer of ``spec`` starts from: what training moved away from."""
    return {name: A[: spec.r].numpy() for name, A in _lora_init(base, spec, spec.r).items() if name in spec.targets}


class _Stack(nn.Module):
    """M runs of the digits MLP stacked on a leading axis: LoRA runs of one padded rank, or full fine-tuning runs."""

    def __init__(self, base: nn.Module, specs: list[RunSpec]):
        super().__init__()
        self.full = specs[0].targets == (FULL,)
        self.base_w = {n: getattr(base, n).weight.detach() for n in LAYERS}
        self.base_b = {n: getattr(base, n).bias.detach() for n in LAYERS}
        M = len(specs)
        #: layers before ``start`` are frozen in every run of the stack: computed once, not per epoch (:meth:`prefix`)
        self.start = 0 if self.full else min(LAYERS.index(s.targets[0]) for s in specs)
        if self.full:
            self.w = nn.ParameterDict({n: nn.Parameter(w.expand(M, *w.shape).clone()) for n, w in self.base_w.items()})
            self.b = nn.ParameterDict({n: nn.Parameter(b.expand(M, *b.shape).clone()) for n, b in self.base_b.items()})
            return
        rank = max(s.r for s in specs)
        inits = [_lora_init(base, s, rank) for s in specs]
        adapted = LAYERS[self.start:]
        self.A = nn.ParameterDict({n: nn.Parameter(torch.stack([i[n] for i in inits])) for n in adapted})
        self.B = nn.ParameterDict({n: nn.Parameter(torch.zeros(M, self.base_w[n].shape[0], rank, dtype=digits_task.DTYPE))
                                   for n in adapted})
        self.scaling = 2.0   # α = 2r, as digits_task.adapt: α/r = 2 at every rank

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen layers before the first one any run of the stack adapts: the same for every run and epoch."""
        with torch.no_grad():
            for name in LAYERS[: self.start]:
                x = torch.relu(nn.functional.linear(x, self.base_w[name], self.base_b[name]))
        return x

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (M, n, width) = :meth:`prefix` of the inputs, one row block per run → logits (M, n, 10)."""
        for name in LAYERS[self.start:]:
            if self.full:
                h = torch.baddbmm(self.b[name][:, None, :], h, self.w[name].transpose(1, 2))
            else:
                down = h @ self.A[name].transpose(1, 2)                                     # (M, n, r)
                h = torch.baddbmm(nn.functional.linear(h, self.base_w[name], self.base_b[name]), down,
                                  (self.B[name] * self.scaling).transpose(1, 2))
            if name != LAYERS[-1]:
                h = torch.relu(h)
        return h

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Test accuracy of each run on (x, y): an array of M numbers."""
        with torch.no_grad():
            h = self.prefix(x)
            return (self(h.expand(self._m, *h.shape)).argmax(-1) == y).double().mean(-1).numpy()

    @property
    def _m(self) -> int:
        return next(iter(self.parameters())).shape[0]


def _group_key(spec: RunSpec):
    """Which stack a run joins: full fine-tuning together; LoRA by first adapted layer and rank rounded up to a power of 2.

    A stack pads every A and B to its largest rank with zeros, which is exact (module docstring) but
    costs arithmetic; each stack costs a fixed Python overhead per step. Powers of 2 balance the two.
    """
    if spec.targets == (FULL,):
        return FULL
    return LAYERS.index(spec.targets[0]), 1 << (spec.r - 1).bit_length()


def _train_stack(stack: _Stack, specs: list[RunSpec], data: digits_task.Split, epochs: int, lr: float,
                 evals: dict[str, digits_task.Split], eval_epochs) -> dict[str, np.ndarray]:
    """Adam on the stack, each run its own batch order; test accuracies (runs × eval epochs) for each of ``evals``."""
    generators = [torch.Generator().manual_seed(s.seed) for s in specs]
    opt = torch.optim.Adam([p for p in stack.parameters() if p.requires_grad], lr=lr, foreach=True)
    n, M = len(data.x_train), len(specs)
    h_train = stack.prefix(data.x_train)
    history = {name: [] for name in [*evals, "train_loss"]}
    for epoch in range(1, epochs + 1):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])     # (M, n)
        epoch_loss = torch.zeros(M, dtype=digits_task.DTYPE)
        for batch in orders.split(128, dim=1):
            opt.zero_grad()
            logits = stack(h_train[batch])
            per_run = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.y_train[batch].reshape(-1),
                                                  reduction="none").view(M, -1).mean(1)
            per_run.sum().backward()
            opt.step()
            epoch_loss += per_run.detach() * batch.shape[1] / n
        if epoch in eval_epochs:
            for name, split in evals.items():
                history[name].append(stack.accuracy(split.x_test, split.y_test))
            history["train_loss"].append(epoch_loss.numpy().copy())
    return {name: np.stack(h, axis=1) for name, h in history.items()}


def train_runs(pretrained: nn.Module, data: digits_task.Split, specs: list[RunSpec], epochs: int = 30, lr: float = 1e-2,
               original: digits_task.Split | None = None, eval_epochs=None) -> list[dict]:
    """Fine-tune ``pretrained`` on ``data`` once per distinct spec, the runs of one rank batched together.

    Returns one dict per spec, in order: ``spec``, ``label``, ``trainable``, ``accuracy`` (test
    accuracy on ``data`` after the last epoch), ``history`` (test accuracy after each epoch in
    ``eval_epochs``, default: the last only), and, if ``original`` is given, ``original_accuracy``
    and ``original_history`` on its test set (the task before adapting: what was forgotten).
    LoRA runs also return ``A``: ``{layer: lora_A as a NumPy array (r×in)}`` for the adapted layers.
    """
    if not specs:
        raise ValueError("specs is empty: pass at least one RunSpec.")
    if not all(isinstance(s, RunSpec) for s in specs):
        raise ValueError("specs must be RunSpec objects, e.g. RunSpec(('fc1', 'fc2'), r=8).")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    eval_epochs = tuple(eval_epochs or (epochs,))
    if epochs not in eval_epochs or not all(1 <= e <= epochs for e in eval_epochs):
        raise ValueError(f"eval_epochs must lie in 1..{epochs} and include the last epoch, got {eval_epochs!r}.")
    shapes = layer_shapes(pretrained)
    evals = {"new": data} | ({"original": original} if original is not None else {})
    requested, specs = specs, list(dict.fromkeys(specs))     # a spec asked for twice is trained once
    groups: dict = {}
    for k, spec in enumerate(specs):
        groups.setdefault(_group_key(spec), []).append(k)
    results: list[dict] = [{} for _ in specs]
    for indices in groups.values():
        group = [specs[k] for k in indices]
        stack = _Stack(pretrained, group)
        history = _train_stack(stack, group, data, epochs, lr, evals, sorted(set(eval_epochs)))
        for m, (k, spec) in enumerate(zip(indices, group)):
            out = dict(spec=spec, label=spec.label, trainable=trainable_count(spec, shapes),
                       history=history["new"][m], accuracy=float(history["new"][m, -1]),
                       train_loss_history=history["train_loss"][m])
            if original is not None:
                out.update(original_history=history["original"][m], original_accuracy=float(history["original"][m, -1]))
            if not stack.full:
                out["A"] = {n: stack.A[n][m, : spec.r].detach().numpy().copy() for n in spec.targets}
            results[k] = out
    trained = by_spec(results)
    return [trained[spec] for spec in requested]


def study_specs(shapes: dict[str, tuple[int, int]], seed: int) -> dict[float, list[RunSpec]]:
    """The runs of one seed of notebook 09's study, by learning rate (each spec once).

    At 0.01: the grid, the fixed budget, `fc2` alone and all layers at the forgetting ranks, and full
    fine-tuning. At 0.001: all layers at r = 16 and full fine-tuning, to see whether the comparison
    of forgetting holds at a second learning rate.
    """
    main = (grid_specs(GRID_ROWS, GRID_RANKS, seed) + budget_specs(BUDGET, shapes, seed)
            + [RunSpec(("fc2",), r, seed) for r in FORGET_RANKS] + [RunSpec(ALL_LAYERS, r, seed) for r in ALL_LAYER_RANKS]
            + [RunSpec((FULL,), None, seed)])
    slow = [RunSpec(ALL_LAYERS, 16, seed), RunSpec((FULL,), None, seed)]
    return {STUDY_LRS[0]: list(dict.fromkeys(main)), STUDY_LRS[1]: slow}


def study_record(run: dict, lr: float, n_new: int, n_original: int) -> dict:
    """One trained run as the study's JSON stores it: counts of correct test digits, the training loss to 5 digits."""
    spec = run["spec"]
    return dict(targets=list(spec.targets), r=spec.r, seed=spec.seed, lr=lr, trainable=run["trainable"],
                new_correct=[int(round(a * n_new)) for a in run["history"]],
                original_correct=[int(round(a * n_original)) for a in run["original_history"]],
                train_loss=[float(f"{v:.5g}") for v in run["train_loss_history"]])


def load_study(stored: dict) -> dict[tuple[RunSpec, float], dict]:
    """The stored study keyed by (spec, learning rate); each run with ``history`` / ``original_history`` as accuracies."""
    n_new, n_original = stored["n_test_new"], stored["n_test_original"]
    out = {}
    for rec in stored["runs"]:
        spec = RunSpec(tuple(rec["targets"]), rec["r"], rec["seed"])
        out[spec, rec["lr"]] = dict(spec=spec, label=spec.label, lr=rec["lr"], trainable=rec["trainable"],
                                    history=np.array(rec["new_correct"]) / n_new,
                                    original_history=np.array(rec["original_correct"]) / n_original,
                                    train_loss=np.array(rec["train_loss"]))
    return out


def at_epoch(run: dict, key: str, epoch: int, eval_epochs=STUDY_EVAL_EPOCHS) -> float:
    """A run's ``key`` history (``"history"``, ``"original_history"``, ``"train_loss"``) at ``epoch``."""
    if epoch not in eval_epochs:
        raise ValueError(f"epoch {epoch} was not evaluated; choose one of {tuple(eval_epochs)}.")
    return float(run[key][tuple(eval_epochs).index(epoch)])


def over_seeds(study: dict, targets: tuple[str, ...], r: int | None, lr: float, key: str, epoch: int,
               seeds=STUDY_SEEDS, eval_epochs=STUDY_EVAL_EPOCHS) -> tuple[float, float, float]:
    """Mean, smallest and largest value of ``key`` at ``epoch`` over the seeds of one setting."""
    values = [at_epoch(study[RunSpec(tuple(targets), r, s), lr], key, epoch, eval_epochs) for s in seeds]
    return float(np.mean(values)), float(min(values)), float(max(values))


def kept_when_learned(run: dict, level: float, eval_epochs=STUDY_EVAL_EPOCHS) -> tuple[int, float] | None:
    """The first evaluated epoch at which the new task reaches ``level``, and the original-task accuracy then (or None)."""
    hit = np.flatnonzero(run["history"] >= level)
    return None if len(hit) == 0 else (eval_epochs[hit[0]], float(run["original_history"][hit[0]]))
