"""The training recipes modern families use: AdamW, a warm-up + cosine learning rate, label smoothing."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stabilityscope.config import OptimConfig, TrainConfig
from stabilityscope.errors import ConfigError
from stabilityscope.training.trainer import build_optimizer, learning_rate_schedule, loss_function, train_steps


def test_the_cosine_schedule_warms_up_linearly_then_decays_to_its_floor():
    lr_at = learning_rate_schedule(OptimConfig(lr=0.1, schedule="cosine", warmup_epochs=2, min_lr=0.001), 100, 10)
    assert [lr_at(s) for s in (0, 9, 19)] == pytest.approx([0.005, 0.05, 0.1])  # lr·(s + 1)/20
    assert lr_at(20) == pytest.approx(0.1) and lr_at(99) == pytest.approx(0.001)  # last step: the floor
    mid = 20 + (99 - 20) / 2
    assert lr_at(int(mid)) == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * int(mid - 20) / 79)))
    values = [lr_at(s) for s in range(20, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after the warm-up
    assert learning_rate_schedule(OptimConfig(lr=0.1), 100, 10) is None  # constant: nothing to set


def test_each_step_uses_the_rate_of_its_global_index_so_a_resume_continues_the_curve():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.0))
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    lr_at = lambda s: 1.0 / (s + 1)  # noqa: E731
    perm = torch.arange(12)
    train_steps(model, opt, x, y, 4, perm, 1, 3, lr_at=lr_at, step0=30)  # batches 1, 2 of an epoch at step 30
    assert seen == pytest.approx([1 / 32, 1 / 33])


def test_adamw_decays_weight_matrices_only_and_decoupled():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.5, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 3])] and decayed["weight_decay"] == 0.1
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3  # the bias and the norm's scale and shift
    w0 = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # a zero gradient: AdamW's step is the decoupled decay alone, w ← w − lr·wd·w
    torch.testing.assert_close(model[0].weight.detach(), w0 * (1 - 0.5 * 0.1))


def test_label_smoothing_enters_the_training_loss_only():
    from stabilityscope.training.data import InMemoryData

    data = InMemoryData("toy", torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 3), torch.tensor([0, 1]), 2,
                        (3,))
    logits, y = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1])
    smooth = loss_function(data, 0.2)(logits, y)
    plain = loss_function(data)(logits, y)
    # with smoothing ε the target puts ε/2 on each class: loss = (1 − ε/2)·CE(y) + (ε/2)·CE(other)
    p = torch.log_softmax(logits, -1)
    assert float(smooth) == pytest.approx(float(-(0.9 * p[0, 0] + 0.1 * p[0, 1])))
    assert float(plain) == pytest.approx(float(-p[0, 0]))


@pytest.mark.parametrize("kwargs, key", [({"warmup_epochs": -1}, "optim.warmup_epochs"),
                                         ({"lr": 0.1, "min_lr": 0.2}, "optim.min_lr")])
def test_bad_schedules_are_refused_where_they_are_built(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        OptimConfig(**kwargs)


def test_label_smoothing_of_one_is_refused():
    with pytest.raises(ConfigError, match=r"train\.label_smoothing"):
        TrainConfig(label_smoothing=1.0)
