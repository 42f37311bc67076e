"""The canonical network's SGD step written by hand, for K stacked copies at once (K = 1: a single run).

EOC-training's network 784 → Linear(784, H, no bias) → tanh/ReLU → Linear(H, C) is trained by SGD with
momentum. Written out (softmax cross-entropy through one hidden layer), the step needs three batched
matmuls forward, three backward, and no autograd graph; the hidden-weight gradient accumulates straight
into the momentum buffer (``baddbmm_``). It follows PyTorch's SGD exactly (``d = g + wd·w``,
``buf = α·buf + d``, ``w −= η·buf``; weight decay on matrices only; no dampening or Nesterov), so a run
trained by it equals one trained by autograd + ``torch.optim.SGD`` within float32 round-off.

Used by :class:`~stabilityscope.training.batched.BatchedRuns` (K runs of a sweep) and by
:class:`~stabilityscope.training.trainer.Run` for a single canonical run (``train.fast_step``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from stabilityscope.config import Config, value_of
from stabilityscope.errors import ConfigError
from stabilityscope.models.registry import FashionFC
from stabilityscope.training.data import dataset_task


def stacked_step_obstacle(cfg: Config) -> Optional[str]:
    """Why ``cfg``'s training cannot use the hand-written step, or None when it can.

    The step is SGD's on the built-in ``fmnist_fc`` from its random init, with softmax cross-entropy on
    class labels (not a regression table's MSE); augmentation transforms batches in ways it does not (it
    takes flattened inputs as they are).
    """
    checks = (
        (value_of(cfg.model.family) == "builtin" and cfg.model.name == "fmnist_fc", f"model {cfg.model.name}"),
        (value_of(cfg.model.init) == "random", f"model.init={value_of(cfg.model.init)}"),
        (dataset_task(cfg.dataset.name) == "classification",
         f"dataset {cfg.dataset.name} is a regression table (MSE loss; the step is cross-entropy's)"),
        (value_of(cfg.optim.name) == "sgd", f"optim.name={value_of(cfg.optim.name)}"),
        (not cfg.dataset.augment, "dataset.augment=true"),
        (value_of(cfg.optim.schedule) == "constant", f"optim.schedule={value_of(cfg.optim.schedule)}"),
        (not cfg.train.label_smoothing, f"train.label_smoothing={cfg.train.label_smoothing}"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    return None


class StackedCanonical:
    """K :class:`~stabilityscope.models.registry.FashionFC` networks as stacked tensors, trained by SGD."""

    def __init__(self, models: Sequence[FashionFC], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float], device: torch.device) -> None:
        acts = {m.activation for m in models}
        if len(acts) != 1:
            raise ConfigError(f"A batched group needs one activation; got {sorted(acts)}.")
        self.activation = acts.pop()
        stack = lambda ts: torch.stack([t.detach() for t in ts]).to(device).contiguous()  # noqa: E731
        self.w1 = stack([m.hidden.weight for m in models])  # (K, H, D)
        self.w2 = stack([m.head.weight for m in models])  # (K, C, H)
        self.b2 = stack([m.head.bias for m in models]).unsqueeze(1)  # (K, 1, C)
        self.buf1, self.buf2, self.buf_b2 = (torch.zeros_like(t) for t in (self.w1, self.w2, self.b2))
        column = lambda v: torch.tensor(list(v), dtype=self.w1.dtype, device=device).view(-1, 1, 1)  # noqa: E731
        self.lr, self.momentum, self.weight_decay = column(lr), column(momentum), column(weight_decay)
        self._hyper_flags()

    def _hyper_flags(self) -> None:
        # Decided once on the host, so that a step never waits for the device to answer a question.
        m = self.momentum.flatten().tolist()
        self.shared_momentum: Optional[float] = m[0] if len(set(m)) == 1 else None
        self.any_decay = any(v != 0 for v in self.weight_decay.flatten().tolist())

    def __len__(self) -> int:
        return self.w1.shape[0]

    def matrices(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weight matrices under the model's layer names (views, not copies)."""
        return {"hidden": self.w1[i], "head": self.w2[i]}

    def set_weight_decay(self, i: int, value: float) -> None:
        """Member ``i``'s weight decay (of both matrices, as the optimiser's one decayed group), from the next step."""
        self.weight_decay[i] = float(value)
        self._hyper_flags()

    def keep(self, index: Sequence[int]) -> None:
        """Keep only the members at ``index`` (in that order)."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.w1.device)
        for name in ("w1", "w2", "b2", "buf1", "buf2", "buf_b2", "lr", "momentum", "weight_decay"):
            setattr(self, name, getattr(self, name).index_select(0, idx).contiguous())
        self._hyper_flags()

    def _momentum_into(self, buf: torch.Tensor) -> float:
        """Scale ``buf`` by each member's momentum; returns the scalar β for baddbmm_ when all are equal.

        One shared momentum (the usual lr or decay sweep) folds the scaling into the matmul that
        accumulates the gradient, saving a full pass over the (K, H, D) buffer.
        """
        if self.shared_momentum is not None:
            return self.shared_momentum
        buf.mul_(self.momentum)
        return 1.0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of every member on its batch; x (K, B, D), y (K, B) → batch losses (K,)."""
        B = x.shape[1]
        a = torch.bmm(x, self.w1.transpose(1, 2))  # (K, B, H) pre-activations
        h = torch.tanh(a) if self.activation == "tanh" else torch.relu(a)
        logits = torch.baddbmm(self.b2, h, self.w2.transpose(1, 2))  # (K, B, C)
        logp = torch.log_softmax(logits, dim=-1)
        loss = -logp.gather(2, y.unsqueeze(-1)).squeeze(-1).mean(1)  # (K,) mean cross-entropy
        # ∂loss/∂logits = (softmax − onehot)/B, per member (each member's loss is its own batch mean)
        d_logits = logp.exp_()
        d_logits.scatter_add_(2, y.unsqueeze(-1), torch.full_like(d_logits[..., :1], -1.0))
        d_logits.div_(B)
        d_h = torch.bmm(d_logits, self.w2)  # (K, B, H), with the head's weights before this step's update
        d_a = d_h.mul_(1 - h * h) if self.activation == "tanh" else d_h.mul_(h > 0)
        # momentum buffers: buf = α·buf + grad (+ wd·w below); PyTorch's SGD without dampening
        beta = self._momentum_into(self.buf1)
        self.buf1.baddbmm_(d_a.transpose(1, 2), x, beta=beta)  # (K, H, D) += gradient of the hidden layer
        beta = self._momentum_into(self.buf2)
        self.buf2.baddbmm_(d_logits.transpose(1, 2), h, beta=beta)  # (K, C, H)
        self.buf_b2.mul_(self.momentum).add_(d_logits.sum(1, keepdim=True))  # (K, 1, C): biases have no decay
        if self.any_decay:
            self.buf1.addcmul_(self.weight_decay, self.w1)
            self.buf2.addcmul_(self.weight_decay, self.w2)
        neg_lr = -self.lr
        self.w1.addcmul_(neg_lr, self.buf1)
        self.w2.addcmul_(neg_lr, self.buf2)
        self.b2.addcmul_(neg_lr, self.buf_b2)
        return loss

    @torch.no_grad()
    def write_member(self, i: int, model: FashionFC, opt: torch.optim.Optimizer, steps_taken: int) -> None:
        """Copy member ``i`` into ``model`` and its SGD optimiser ``opt`` (what save_state and the tracker read)."""
        model.hidden.weight.copy_(self.w1[i])
        model.head.weight.copy_(self.w2[i])
        model.head.bias.copy_(self.b2[i, 0])
        if float(self.momentum[i]) == 0 or steps_taken == 0:
            return  # torch's SGD keeps no momentum buffer then
        for p, buf in zip((model.hidden.weight, model.head.weight, model.head.bias),
                          (self.buf1[i], self.buf2[i], self.buf_b2[i, 0])):
            opt.state[p]["momentum_buffer"] = buf.clone()

    @torch.no_grad()
    def read_momentum(self, i: int, model: FashionFC, opt: torch.optim.Optimizer) -> None:
        """Member ``i``'s momentum buffers from ``opt`` (a resumed run's torch SGD state); zero where it has none."""
        for p, buf in zip((model.hidden.weight, model.head.weight, model.head.bias),
                          (self.buf1[i], self.buf2[i], self.buf_b2[i, 0])):
            saved = opt.state.get(p, {}).get("momentum_buffer")
            buf.copy_(saved if saved is not None else torch.zeros_like(buf))
