"""lora_edu.lessons.digits_task: dead ReLU units leave exact zero rows and columns in the update ΔW."""
import copy

import torch
from torch import nn

from lora_edu.lessons import digits_task


def small_split(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 64, generator=g, dtype=digits_task.DTYPE)
    y = torch.randint(0, 10, (n,), generator=g)
    return digits_task.Split(x, y, x[:8], y[:8])


def killed_mlp(dead=(3, 7), seed=0):
    """An MLP whose act1 units ``dead`` can never fire on inputs in [0, 1]: weights ≤ 0, bias −1."""
    torch.manual_seed(seed)
    model = digits_task.MLP()
    with torch.no_grad():
        for i in dead:
            model.fc1.weight[i] = -model.fc1.weight[i].abs()
            model.fc1.bias[i] = -1.0
    return model


def test_dead_units_finds_the_units_that_never_fire():
    model, data = killed_mlp(), small_split()
    dead = digits_task.dead_units(model, data.x_train)
    assert dead["act1"][[3, 7]].all()
    h1 = model.act1(model.fc1(data.x_train))
    assert torch.equal(dead["act1"], (h1 == 0).all(0))


def test_zero_lines():
    d = torch.ones(4, 5)
    d[1] = 0
    d[:, 2] = 0
    rows, cols = digits_task.zero_lines(d)
    assert rows.tolist() == [False, True, False, False] and cols.tolist() == [False, False, True, False, False]


def test_a_dead_unit_gives_a_zero_row_in_fc1_and_a_zero_column_in_fc2_under_adam():
    base, data = killed_mlp(), small_split()
    model = copy.deepcopy(base)
    digits_task.train(model, data, epochs=3)
    dead = digits_task.dead_units(base, data.x_train)["act1"] & digits_task.dead_units(model, data.x_train)["act1"]
    assert dead[[3, 7]].all()
    rows1, _ = digits_task.zero_lines(model.fc1.weight - base.fc1.weight)
    _, cols2 = digits_task.zero_lines(model.fc2.weight - base.fc2.weight)
    assert torch.equal(rows1, dead) and torch.equal(cols2, dead)
    delta = (model.fc2.weight - base.fc2.weight).detach()
    assert torch.linalg.matrix_rank(delta) <= 128 - int(dead.sum())


def test_existing_behaviour_kept():
    assert isinstance(digits_task.MLP().fc1, nn.Linear) and digits_task.MLP().fc2.weight.dtype == torch.float64
