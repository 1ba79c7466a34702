"""The planned training step (zor.engine.plan) equals the general path, bit for bit.

Each case trains one seeded network through ``train_batch`` (the plan where it applies) and a copy
through the general path (``plan.for_step`` patched to give none), on the same batches, and compares
every weight, threshold, firing rate and optimizer moment with ``torch.equal``: the plan runs the same
tensor operations in the same order, so nothing may differ. Cases: the four rules, activations, error
scaling off, other update bounds, no weight clamp, threshold bounds, a finite output threshold, the
masked co-activity (few hidden units spike), an optimizer without a fused kernel (the learning step's
own fallback), a change of batch size, thresholds set between steps, and the optimizer's learning rate,
weight decay and a step hook changed between steps (the plan's kept optimizer arguments looked up again).
"""

from __future__ import annotations

import copy

import pytest
import torch

from zor import Layer, Zor
from zor.engine import plan as plan_
from zor.engine.layer import Conv

STEPS = 12


def _net(case: str) -> Zor:
    hidden = dict(threshold_range=(-0.5, 0.8)) if case == "bounds" else {}
    if case == "masked":
        hidden = dict(threshold=0.3)                        # 1-5 of 14 hidden units spike: the masked co-activity
    out = dict(activation_function="sigmoid", threshold=0.3) if case == "finite_output" else {}
    layers = [Layer(20), Layer(14, activation_function="relu" if case == "relu" else None, **hidden),
              Layer(9, max_update_norm=None if case == "no_clip" else (2.5 if case == "bound" else 1.0),
                    max_weight=None if case == "no_clamp" else 1.0),
              Layer(20, **out)]
    rule = case if case in ("coactivity", "normalized", "post_spikes") else "gated"
    optimizer = {"sgd": "sgd", "adam": "adam"}.get(case, "adamw")
    return Zor(layers, seed=4, rule=rule, optimizer=optimizer, error_scaling=case != "no_scaling", device="cpu")


CASES = ["gated", "coactivity", "normalized", "post_spikes", "relu", "no_scaling", "bound", "no_clip", "no_clamp",
         "bounds", "finite_output", "masked", "sgd", "adam", "batch_change", "set_threshold", "optimizer_change"]


def _batches(case: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    sizes = [16] * STEPS if case != "batch_change" else [16] * 5 + [7] * 4 + [16] * 3
    return [torch.rand(b, 20, generator=gen) for b in sizes]


def _train(net: Zor, case: str, batches: list[torch.Tensor]) -> None:
    for k, x in enumerate(batches):
        if case == "set_threshold" and k == 6:
            net.set_threshold(3, 0.2)                       # the output stops always spiking
            net.set_threshold(1, float("-inf"))             # a hidden layer starts
        group = net.optimizer.param_groups[0]
        if case == "optimizer_change" and k == 4:
            group["lr"] = group["lr"] * 0.5                 # as a scheduler would: a new value
        if case == "optimizer_change" and k == 6:
            group["weight_decay"] = 0.05
        if case == "optimizer_change" and k == 8:           # a step hook: the optimizer's own step from here
            net._hook = net.optimizer.register_step_post_hook(lambda opt, args, kwargs: None)
        net.train_batch(x, x)


def _state(net: Zor) -> dict:
    out = {f"w{i}": w.detach().clone() for i, w in enumerate(net.weights)}
    for i in range(len(net.layers)):
        out[f"theta{i}"], out[f"rate{i}"] = net.threshold(i).clone(), net.rate(i).clone()
    for i, w in enumerate(net.weights):
        for key, value in net.optimizer.state.get(w, {}).items():
            out[f"opt{i}.{key}"] = value.clone()
    return out


@pytest.mark.parametrize("case", CASES)
def test_planned_step_equals_the_general_path(case, monkeypatch):
    torch.set_num_threads(1)
    batches = _batches(case)
    planned, general = _net(case), _net(case)
    plans, real = [], plan_.for_step
    monkeypatch.setattr(plan_, "for_step", lambda net, x: plans.append(real(net, x)) or plans[-1])
    _train(planned, case, batches)
    monkeypatch.setattr(plan_, "for_step", lambda net, x: None)
    _train(general, case, batches)
    assert len(plans) == len(batches) and all(p is not None for p in plans), "a step did not take the plan"
    a, b = _state(planned), _state(general)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{case}: the planned step differs from the general path in {different}"


def test_the_plan_is_kept_and_rebuilt_when_the_batch_size_changes():
    net = Zor([Layer(6), Layer(4), Layer(6)], seed=0, device="cpu")
    x16, x7 = torch.rand(16, 6), torch.rand(7, 6)
    first = plan_.for_step(net, x16)
    assert plan_.for_step(net, x16) is first
    assert plan_.for_step(net, x7) is not first and plan_.for_step(net, x7).key[0] == 7


@pytest.mark.parametrize("network", ["stateful", "novelty", "conv", "sparse"])
def test_other_networks_take_the_general_path(network):
    layers = [Layer(16), Layer(8), Layer(16)]
    if network == "stateful":
        layers[1] = Layer(8, decay=0.5)
    if network == "novelty":
        layers[0] = Layer(16, novelty_factor=0.5)
    if network == "conv":
        layers = [Layer(16, shape=(1, 4, 4)), Conv(2, kernel_size=3), Layer(16)]
    net = Zor(layers, seed=0, device="cpu")
    x = torch.rand(5, 16)
    assert plan_.for_step(net, x.to_sparse() if network == "sparse" else x) is None
    before = copy.deepcopy(net.weights[0].detach())
    net.train_batch(x.to_sparse() if network == "sparse" else x, x)
    assert not torch.equal(before, net.weights[0]), "the general path did not train"


def test_a_layer_setting_changed_between_steps_is_seen():
    """Novelty gating switched on after a planned step: the next step takes the general path (the plan reads
    the layers' settings on every step)."""
    net = Zor([Layer(6), Layer(4), Layer(6)], seed=0, device="cpu")
    x = torch.rand(5, 6)
    net.train_batch(x, x)
    assert plan_.for_step(net, x) is not None
    net.layers[0].novelty_factor = 0.5
    assert plan_.for_step(net, x) is None
    net.train_batch(x, x)
    assert torch.count_nonzero(net.novelty_trace(0)) > 0     # the general path's novelty trace moved


@pytest.mark.parametrize("rule", ["coactivity", "normalized", "post_spikes", "gated"])
def test_planned_step_reads_nothing_back(rule, no_host_reads):
    """The methods a host read-back goes through (item, __bool__, __float__, ...) raise during planned steps
    (after a first step filled the caches): on CUDA the step would not stall the stream. The masked co-activity's
    nonzero runs on a CPU only (zor.engine.learning._active_columns)."""
    net = Zor([Layer(30), Layer(20), Layer(12, max_update_norm=None), Layer(30)], rule=rule, device="cpu", seed=0)
    x = torch.rand(8, 30, generator=torch.Generator().manual_seed(0))
    net._train_step(x, x)
    assert plan_.for_step(net, x) is not None
    before = net.weights[0].detach().clone()
    with no_host_reads("the planned step"):
        for _ in range(3):
            net._train_step(x, x)
    assert not torch.equal(before, net.weights[0]), "the patched steps did not train"
