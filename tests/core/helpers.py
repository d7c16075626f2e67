"""Small models and snapshots shared by the unit tests."""
import copy

import torch
from torch import nn


class TinyBlock(nn.Module):
    """Names like a transformer block's, so target_modules read as they would on LLaMA."""

    def __init__(self, d=8, hidden=12):
        super().__init__()
        self.q_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.up_proj, self.down_proj = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        x = self.norm(x + self.q_proj(x) * torch.sigmoid(self.v_proj(x)))
        return x + self.down_proj(torch.relu(self.up_proj(x)))


def tiny_model(seed=0, layers=2, d=8):
    torch.manual_seed(seed)
    return nn.Sequential(*[TinyBlock(d) for _ in range(layers)])


def snapshot(model):
    """Everything a failed call must leave as it was: structure, values, trainable flags."""
    return (repr(model), {k: v.clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()}, copy.deepcopy([type(m) for m in model.modules()]))


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after[0] == before[0]
    assert after[1].keys() == before[1].keys() and all(torch.equal(after[1][k], before[1][k]) for k in before[1])
    assert after[2] == before[2] and after[3] == before[3]
