"""NIR neurons, discretised by forward Euler with step dt (the discretisation recorded in metadata as "euler").

NIR states each neuron as a continuous-time ODE (the ``nir`` package's node definitions):

    IF          dv/dt = r·x;                                      spike when v > v_threshold, v ← v_reset
    LIF         τ·dv/dt = (v_leak − v) + r·x;                     spike when v > v_threshold, v ← v_reset
    LI          τ·dv/dt = (v_leak − v) + r·x                      (output v, no spikes)
    Integrator  dv/dt = r·x                                       (output v)
    CubaLIF     τ_syn·di/dt = −i + w_in·x;  τ_mem·dv/dt = (v_leak − v) + r·i;  spike, reset as LIF
    CubaLI      the same without spikes (output v)
    Threshold   y = [x > θ]                                       (stateless)

One step t (x = x_t, state v = v_{t−1}, i = i_{t−1}; a = dt/τ and the products dt·r are float32
constants folded at export, the same in the reference and the ONNX graph):

    IF          v' = v + (dt·r)·x
    LIF / LI    v' = v + a·((v_leak − v) + r·x)
    Integrator  v' = v + (dt·r)·x
    CubaLIF/LI  i' = i + a_syn·(w_in·x − i);   v' = v + a_mem·((v_leak − v) + r·i')
    spiking     s = [v' > v_threshold];  y = s (0/1);  v_t = v_reset where s, else v'
    non-spiking y = v';  v_t = v'

So a spike is emitted in the step v crosses the threshold, and the next step starts from v_reset
(reset to a value, as NIR defines IF/LIF/CubaLIF; NIR has no reset by subtraction).
"""

from __future__ import annotations

import numpy as np

from .nodes import Converter, register

__all__ = ["DISCRETISATION", "DISCRETISATIONS"]

DISCRETISATION = "euler"     # the default: forward Euler, step dt (the equations above)
# "euler": a = dt/τ.  "exp" (exponential Euler): each ODE solved exactly over the step with its input held
# constant, v' = v_leak + (v − v_leak)·e^(−dt/τ) + r·x·(1 − e^(−dt/τ)), i.e. the same update with a = 1 − e^(−dt/τ)
# (IF and I have no leak: the same in both). Chosen per export (export_nir(discretisation=...)), stored in zor.nir.
DISCRETISATIONS = ("euler", "exp")


def _c(node, key) -> np.ndarray:
    return node.params[key]


def _a(node, tau: str, dt: float) -> np.ndarray:
    """The leak coefficient a as float32: dt/τ ("euler") or 1 − e^(−dt/τ) ("exp"); τ must be positive."""
    t = _c(node, tau)
    if np.any(t <= 0):
        raise node.fail(f"{tau} holds {int((t <= 0).sum())} value(s) ≤ 0: expected positive time constants")
    if node.attrs.get("discretisation", DISCRETISATION) == "exp":
        return (-np.expm1(-np.float64(dt) / t.astype(np.float64))).astype(np.float32)
    return (np.float32(dt) / t).astype(np.float32)


def _t(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class _Neuron(Converter):
    """Shared reset / output logic: subclasses give the membrane update ``v'``."""

    def spike_torch(self, node, v1, state):
        import torch

        if not self.spiking:
            state["v"] = v1
            return v1, state, None
        theta = _t(_c(node, "v_threshold"))
        s = v1 > theta
        state["margin"] = v1 - theta            # how far from the threshold (verification counts ties)
        state["v"] = torch.where(s, _t(_c(node, "v_reset")).expand_as(v1), v1)
        return s.to(v1.dtype), state, s

    def spike_onnx(self, node, b, v1, state):
        if not self.spiking:
            state["v"] = v1
            return v1, state, None
        s = b.op("Greater", [v1, b.const(_c(node, "v_threshold"), node.name + ".v_threshold")])
        state["v"] = b.op("Where", [s, b.const(_c(node, "v_reset"), node.name + ".v_reset"), v1])
        return b.op("Cast", [s], to=1), state, s


@register("IF")
class IFConverter(_Neuron):
    """IF: v' = v + (dt·r)·x; s = [v' > v_threshold]; v_t = v_reset where s, else v'."""

    fields = ("r", "v_threshold")
    optional = {"v_reset": 0.0}
    state = ("v",)
    spiking = True

    def torch_step(self, node, x, state, dt):
        v1 = state["v"] + _t(np.float32(dt) * _c(node, "r")) * x
        return self.spike_torch(node, v1, {})

    def onnx_step(self, node, b, x, state, dt):
        dr = b.const((np.float32(dt) * _c(node, "r")).astype(np.float32), node.name + ".dt_r")
        v1 = b.op("Add", [state["v"], b.op("Mul", [dr, x])])
        return self.spike_onnx(node, b, v1, {})


@register("I")
class IntegratorConverter(IFConverter):
    """Integrator: v' = v + (dt·r)·x; y = v'."""

    fields = ("r",)
    optional = {}
    spiking = False


@register("LIF")
class LIFConverter(_Neuron):
    """LIF: v' = v + (dt/τ)·((v_leak − v) + r·x); s = [v' > v_threshold]; v_t = v_reset where s, else v'."""

    fields = ("tau", "r", "v_leak", "v_threshold")
    optional = {"v_reset": 0.0}
    state = ("v",)
    spiking = True

    def torch_step(self, node, x, state, dt):
        v = state["v"]
        v1 = v + _t(_a(node, "tau", dt)) * ((_t(_c(node, "v_leak")) - v) + _t(_c(node, "r")) * x)
        return self.spike_torch(node, v1, {})

    def onnx_step(self, node, b, x, state, dt):
        v, n = state["v"], node.name
        drive = b.op("Add", [b.op("Sub", [b.const(_c(node, "v_leak"), n + ".v_leak"), v]),
                             b.op("Mul", [b.const(_c(node, "r"), n + ".r"), x])])
        v1 = b.op("Add", [v, b.op("Mul", [b.const(_a(node, "tau", dt), n + ".dt_over_tau"), drive])])
        return self.spike_onnx(node, b, v1, {})


@register("LI")
class LIConverter(LIFConverter):
    """LI: v' = v + (dt/τ)·((v_leak − v) + r·x); y = v'."""

    fields = ("tau", "r", "v_leak")
    optional = {}
    spiking = False


@register("CubaLIF")
class CubaLIFConverter(_Neuron):
    """CubaLIF: i' = i + (dt/τ_syn)·(w_in·x − i); v' = v + (dt/τ_mem)·((v_leak − v) + r·i');
    s = [v' > v_threshold]; v_t = v_reset where s, else v'; i_t = i'."""

    fields = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold")
    optional = {"v_reset": 0.0, "w_in": 1.0}
    state = ("i", "v")
    spiking = True

    def torch_step(self, node, x, state, dt):
        i, v = state["i"], state["v"]
        i1 = i + _t(_a(node, "tau_syn", dt)) * (_t(_c(node, "w_in")) * x - i)
        v1 = v + _t(_a(node, "tau_mem", dt)) * ((_t(_c(node, "v_leak")) - v) + _t(_c(node, "r")) * i1)
        return self.spike_torch(node, v1, {"i": i1})

    def onnx_step(self, node, b, x, state, dt):
        i, v, n = state["i"], state["v"], node.name
        syn = b.op("Sub", [b.op("Mul", [b.const(_c(node, "w_in"), n + ".w_in"), x]), i])
        i1 = b.op("Add", [i, b.op("Mul", [b.const(_a(node, "tau_syn", dt), n + ".dt_over_tau_syn"), syn])])
        drive = b.op("Add", [b.op("Sub", [b.const(_c(node, "v_leak"), n + ".v_leak"), v]),
                             b.op("Mul", [b.const(_c(node, "r"), n + ".r"), i1])])
        v1 = b.op("Add", [v, b.op("Mul", [b.const(_a(node, "tau_mem", dt), n + ".dt_over_tau_mem"), drive])])
        return self.spike_onnx(node, b, v1, {"i": i1})


@register("CubaLI")
class CubaLIConverter(CubaLIFConverter):
    """CubaLI: i' = i + (dt/τ_syn)·(w_in·x − i); v' = v + (dt/τ_mem)·((v_leak − v) + r·i'); y = v'."""

    fields = ("tau_syn", "tau_mem", "r", "v_leak")
    optional = {"w_in": 1.0}
    spiking = False


@register("Threshold")
class ThresholdConverter(Converter):
    """Threshold: y = [x > θ] (0/1), stateless."""

    fields = ("threshold",)
    spiking = True

    def torch_step(self, node, x, state, dt):
        theta = _t(_c(node, "threshold"))
        s = x > theta
        return s.to(x.dtype), {"margin": x - theta}, s

    def onnx_step(self, node, b, x, state, dt):
        s = b.op("Greater", [x, b.const(_c(node, "threshold"), node.name + ".threshold")])
        return b.op("Cast", [s], to=1), {}, s
