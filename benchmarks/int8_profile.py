"""Where an int8 call's microseconds go, node by node beside float32, and what each product form costs.

    python -m benchmarks.int8_profile [--rounds 25] [--json PATH]

1. trains and exports the few-shot 784-128-784 autoencoder as ``benchmarks.runtime_bench``
   does (float32, and int8 with the detected profile's recipe);
2. **per node, by prefix timing**: each file's graph as onnxruntime optimises it (the QDQ
   pairs fused into MatMulIntegerToFloat) cut after node k = 0..n, one session per prefix,
   the runtime's session options, one thread. The prefixes take turns round by round; per
   prefix t_k is the least disturbed round's mean call time (the minimum over rounds), and
   node k costs t_k − t_{k−1}. Batch 1 and 64;
3. **onnxruntime's profiler** at batch 1 (median kernel time per node): it adds about as much
   per node as most nodes cost, so it is printed beside, not used for sums;
4. **the products alone**, one-layer graphs K→N at M = 1 and 64, and a 16→16 one for the fixed
   cost of a call: float MatMul; QDQ u8×s8 per output column (MatMulIntegerToFloat, the export's
   form); the same with one scale for the whole matrix (fewer numbers, other rounding);
   unit-scale product then Mul by the column scales; DynamicQuantizeLinear + MatMulInteger
   (fused into DynamicQuantizeMatMul); QLinearMatMul (u8 out); weight-only int8 in blocks of 16
   (DequantizeLinear → MatMul, fused into MatMulNBits); an Identity graph for the call itself;
5. **the bound at batch 1**: the int8 call with its products replaced by the cheapest form of
   step 4 at M = 1, against float32:

       best_int8 = t_int8 − Σ products_int8 + Σ min_form (t_form − t_Identity)(M = 1)
       speed-up  = t_float / best_int8

Speeds are ratios within this run; the absolute µs are this machine's (name and load average
printed). Run it with nothing else timed on the machine: ``python -m benchmarks.int8_profile``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from zor.devices import detect

from benchmarks import common
from benchmarks.runtime_bench import train_and_export
from zor.common import format as fmt

__all__ = ["options", "optimized", "prefixes", "node_costs", "profiler_costs", "product_forms", "product_costs",
           "bound", "main"]

PRODUCTS = ("MatMul", "MatMulIntegerToFloat", "QuantizeLinear", "DynamicQuantizeMatMul", "MatMulNBits")


def options(profiling: bool = False) -> ort.SessionOptions:
    """The runtime's session options for the detected profile, one thread (``zor.runtime.session``)."""
    from zor.runtime.session import session_options

    opts = session_options(detect().profile, threads=1)
    if profiling:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "zor-int8-profile")
    return opts


def optimized(model: onnx.ModelProto, folder: str) -> onnx.ModelProto:
    """The graph onnxruntime runs (after its fusions), read back from ``optimized_model_filepath``."""
    path = os.path.join(folder, "optimized.onnx")
    opts = options()
    opts.optimized_model_filepath = path
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return onnx.load(path)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Each tensor's element type, propagated through the node kinds these graphs hold (bool out of a
    comparison, Cast's ``to``, QuantizeLinear's zero point type, an elementwise op's first input, else float)."""
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for n in model.graph.node:
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if to is not None:
            t = to
        elif n.op_type in ("Greater", "Less", "And"):
            t = TensorProto.BOOL
        elif n.op_type == "QuantizeLinear":
            t = types.get(n.input[2], TensorProto.UINT8) if len(n.input) > 2 and n.input[2] else TensorProto.UINT8
        elif n.op_type in ("Identity", "Mul", "Add", "Where"):
            t = types.get(n.input[-1] if n.op_type == "Where" else n.input[0], TensorProto.FLOAT)
        else:
            t = TensorProto.FLOAT
        types.update({o: t for o in n.output})
    return types


def prefixes(model: onnx.ModelProto) -> list[tuple[str, onnx.ModelProto]]:
    """(label, graph cut after node k) for k = 0..n; a prefix outputs every graph output it computes and its
    last node's output (so no node is pruned); k = 0 is the input copied (the cost of a call itself)."""
    nodes, out, types = list(model.graph.node), [], _elem_types(model)
    for k in range(len(nodes) + 1):
        p = copy.deepcopy(model)
        del p.graph.node[k:]
        made = {o for n in nodes[:k] for o in n.output}
        keep = [o for o in model.graph.output if o.name in made]
        if k and nodes[k - 1].output[0] not in {o.name for o in keep}:
            keep.append(helper.make_tensor_value_info(nodes[k - 1].output[0], types[nodes[k - 1].output[0]], None))
        if not k:
            p.graph.node.append(helper.make_node("Identity", [fmt.INPUT], ["call"]))
            keep = [helper.make_tensor_value_info("call", TensorProto.FLOAT, None)]
        del p.graph.output[:]
        p.graph.output.extend(keep)
        label = f"{nodes[k - 1].op_type} {nodes[k - 1].name}" if k else "(the call: input copied out)"
        out.append((label, p))
    return out


def _timer(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    def measure() -> float:
        for _ in range(max(3, calls // 20)):
            fn()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls * 1e6
    return measure


def node_costs(model: onnx.ModelProto, x: np.ndarray, rounds: int, calls: int) -> list[dict[str, Any]]:
    """Per node of ``model`` (an optimised graph) at batch len(x): cumulative and own µs (see the module)."""
    sessions = [(label, ort.InferenceSession(p.SerializeToString(), options(), providers=["CPUExecutionProvider"]))
                for label, p in prefixes(model)]
    feeds = {fmt.INPUT: np.ascontiguousarray(x, np.float32)}
    measures = {i: _timer(lambda s=s: s.run(None, feeds), calls) for i, (_, s) in enumerate(sessions)}
    times = common.interleave(measures, rounds)
    least = [min(times[i]) for i in range(len(sessions))]
    return [{"node": label, "cumulative_us": least[i], "node_us": least[i] - (least[i - 1] if i else 0.0),
             "median_cumulative_us": statistics.median(times[i])} for i, (label, _) in enumerate(sessions)]


def profiler_costs(path: Path, x: np.ndarray, calls: int = 2000) -> list[dict[str, Any]]:
    """onnxruntime's profiler: median kernel µs per node over ``calls`` calls (the first quarter dropped)."""
    sess = ort.InferenceSession(str(path), options(profiling=True), providers=["CPUExecutionProvider"])
    for _ in range(calls):
        sess.run([fmt.OUTPUT], {fmt.INPUT: x})
    trace = sess.end_profiling()
    with open(trace, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(trace)
    per: dict[tuple, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per.setdefault((e["name"][:-len("_kernel_time")], e["args"].get("op_name")), []).append(e["dur"])
    return [{"node": f"{op} {name}", "profiler_us": float(np.median(d[len(d) // 4:]))} for (name, op), d in per.items()]


def _graph(nodes: list, inits: list) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "product", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, None])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def product_forms(k: int, n: int, seed: int = 0) -> dict[str, onnx.ModelProto]:
    """One-layer graphs y = a·W (K = k, N = n) in each form of step 4 of the module docstring."""
    w = (np.random.default_rng(seed).standard_normal((k, n)) * 0.05).astype(np.float32)
    sw = (np.abs(w).max(0) / 127).astype(np.float32)                        # (N,) per output column
    st = np.float32(np.abs(w).max() / 127)                                  # one for the matrix
    i = lambda a, name: numpy_helper.from_array(np.asarray(a), name)        # noqa: E731
    base = [i(np.clip(np.round(w / sw), -127, 127).astype(np.int8), "wq"), i(sw, "sw"), i(np.zeros(n, np.int8), "zw"),
            i(np.float32(1 / 255), "sa"), i(np.uint8(0), "za"), i(np.float32(1), "one"), i(np.int8(0), "z0"),
            i(np.clip(np.round(w / st), -127, 127).astype(np.int8), "wt"), i(st, "st"), i(np.float32(0.1), "so"),
            i(np.uint8(128), "zo")]
    qa = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["qa"]),
          helper.make_node("DequantizeLinear", ["qa", "sa", "za"], ["da"])]
    mm = lambda b: helper.make_node("MatMul", ["da", b], ["y"])              # noqa: E731
    blk = 16 if k % 16 == 0 else 1
    wb = w.reshape(k // blk, blk, n)
    sb = (np.abs(wb).max(1) / 127).astype(np.float32)                       # (K/16, N)
    return {
        "(the call: Identity)": _graph([helper.make_node("Identity", ["a"], ["y"])], []),
        "float32 MatMul": _graph([helper.make_node("MatMul", ["a", "w"], ["y"])], [i(w, "w")]),
        "QDQ u8xs8 per column (export)": _graph(qa + [helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["dw"],
                                                                        axis=1), mm("dw")], base),
        "QDQ u8xs8 one scale": _graph(qa + [helper.make_node("DequantizeLinear", ["wt", "st", "z0"], ["dw"]), mm("dw")],
                                      base),
        "QDQ unit scale, then Mul(columns)": _graph(qa + [
            helper.make_node("DequantizeLinear", ["wq", "one", "z0"], ["dw"]),
            helper.make_node("MatMul", ["da", "dw"], ["p"]), helper.make_node("Mul", ["p", "sw"], ["y"])], base),
        "dynamic (DynamicQuantizeMatMul)": _graph([
            helper.make_node("DynamicQuantizeLinear", ["a"], ["q", "s", "z"]),
            helper.make_node("MatMulInteger", ["q", "wt", "z", "z0"], ["acc"]),
            helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["s", "st"], ["scale"]), helper.make_node("Mul", ["accf", "scale"], ["y"])], base),
        "QLinearMatMul (u8 out)": _graph([
            helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["qa"]),
            helper.make_node("QLinearMatMul", ["qa", "sa", "za", "wq", "sw", "zw", "so", "zo"], ["qy"]),
            helper.make_node("DequantizeLinear", ["qy", "so", "zo"], ["y"])], base),
        "weight-only int8, blocks of 16 (MatMulNBits)": _graph([
            helper.make_node("DequantizeLinear", ["wb", "sb"], ["dw"], axis=0, block_size=blk),
            helper.make_node("MatMul", ["a", "dw"], ["y"])],
            [i(np.clip(np.round(wb / sb[:, None, :]), -127, 127).astype(np.int8).reshape(k, n), "wb"), i(sb, "sb")]),
    }


def product_costs(shapes: list[tuple[int, int]], rounds: int) -> list[dict[str, Any]]:
    """µs per call of every form of :func:`product_forms` at M = 1 and 64 (least disturbed round), with the
    graph onnxruntime made of it and the float32 MatMul's time divided by the form's (same rounds)."""
    rows = []
    for k, n in shapes:
        forms = product_forms(k, n)
        with tempfile.TemporaryDirectory(prefix="zor-int8-forms-") as tmp:
            fused = {name: [nd.op_type for nd in optimized(m, tmp).graph.node] for name, m in forms.items()}
        sessions = {name: ort.InferenceSession(m.SerializeToString(), options(), providers=["CPUExecutionProvider"])
                    for name, m in forms.items()}
        for m_rows in (1, 64):
            x = np.random.default_rng(1).random((m_rows, k), dtype=np.float32)
            calls = 400 if m_rows == 1 else 60
            times = common.interleave({name: _timer(lambda s=s: s.run(None, {"a": x}), calls)
                                       for name, s in sessions.items()}, rounds)
            ref = times["float32 MatMul"]
            for name in forms:
                rows.append({"K": k, "N": n, "M": m_rows, "form": name, "us": min(times[name]),
                             "float_over_form": common.paired_ratio(ref, times[name]), "onnxruntime_runs": fused[name]})
    return rows


def _products(costs: list[dict[str, Any]]) -> float:
    return sum(r["node_us"] for r in costs if r["node"].split()[0] in PRODUCTS)


def _cheapest(forms: list[dict[str, Any]], k: int, n: int, pays_at_64: bool) -> dict[str, Any]:
    """The cheapest int8 form of K×N at M = 1 (only those faster than float32 at M = 64 when ``pays_at_64``),
    its µs and its µs above the bare call (the Identity graph)."""
    here = {r["form"]: r for r in forms if (r["K"], r["N"], r["M"]) == (k, n, 1)}
    at64 = {r["form"]: r for r in forms if (r["K"], r["N"], r["M"]) == (k, n, 64)}
    ok = [r for name, r in here.items() if name not in ("float32 MatMul", "(the call: Identity)")
          and (not pays_at_64 or at64[name]["float_over_form"] > 1.0)]
    best = min(ok, key=lambda r: r["us"])
    return {"form": best["form"], "us": best["us"], "product_us": best["us"] - here["(the call: Identity)"]["us"]}


def bound(float_b1: list[dict], int8_b1: list[dict], forms: list[dict], shapes: list[tuple[int, int]]) -> dict:
    """Step 5 of the module docstring: the best batch-1 int8 call reachable by changing its products alone,
    over every form and over the forms that still pay at batch 64."""
    t_f, t_q = float_b1[-1]["cumulative_us"], int8_b1[-1]["cumulative_us"]
    out: dict[str, Any] = {"float32_call_us": t_f, "int8_call_us": t_q, "float32_products_us": _products(float_b1),
                           "int8_products_us": _products(int8_b1), "speedup_b1_now": t_f / t_q,
                           "note": "bare sessions; Model.run adds the same few µs to both, which lowers every ratio"}
    for tag, pays in (("any_form", False), ("forms_paying_at_b64", True)):
        cheapest = {f"{k}x{n}": _cheapest(forms, k, n, pays) for k, n in shapes}
        best = t_q - out["int8_products_us"] + sum(c["product_us"] for c in cheapest.values())
        out[tag] = {"cheapest_m1": cheapest, "best_int8_call_us": best, "best_speedup_b1": t_f / best}
    return out


def _node_table(name: str, b1: list[dict], b64: list[dict], prof: list[dict]) -> str:
    prof_by = {r["node"]: r["profiler_us"] for r in prof}
    rows = [{"node": a["node"], "b1": a["node_us"], "prof": prof_by.get(a["node"]), "b64": b["node_us"]}
            for a, b in zip(b1, b64)]
    rows.append({"node": "total (the whole call)", "b1": b1[-1]["cumulative_us"], "prof": None,
                 "b64": b64[-1]["cumulative_us"]})
    return f"{name}\n" + common.format_table(rows, ["node", "b1", "prof", "b64"],
                                             ["node", "batch 1 us", "profiler us (b1)", "batch 64 us"])


@common.command
@click.option("--rounds", type=click.IntRange(min=3), default=25, help="Rounds; each figure is the least disturbed one.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON.")
def main(rounds: int, json_path: Optional[Path]) -> None:
    """Per-node µs of the float32 and int8 few-shot exports, the product forms, and the batch-1 bound."""
    common.check_json_folder(json_path)
    torch.set_num_threads(1)
    shapes = [(784, 128), (128, 784), (16, 16)]
    doc: dict[str, Any] = {"environment": common.environment(1), "detected": detect().profile.name, "files": {}}
    with tempfile.TemporaryDirectory(prefix="zor-int8-profile-") as tmp:
        _, f32, q8, test = train_and_export(Path(tmp))
        text = []
        for label, path in (("float32", f32), ("int8", q8)):
            graph = optimized(onnx.load(str(path)), tmp)
            b1 = node_costs(graph, test[:1], rounds, 400)
            b64 = node_costs(graph, test[:64], rounds, 40)
            prof = profiler_costs(path, test[:1])
            doc["files"][label] = {"batch1": b1, "batch64": b64, "profiler_batch1": prof}
            text.append(_node_table(f"{label} ({path.name}), per node, least disturbed of {rounds} rounds", b1, b64, prof))
    doc["products"] = product_costs(shapes, rounds)
    doc["bound"] = bound(doc["files"]["float32"]["batch1"], doc["files"]["int8"]["batch1"], doc["products"], shapes[:2])
    b = doc["bound"]
    text.append(common.format_table(doc["products"], ["K", "N", "M", "form", "us", "float_over_form"],
                                    ["K", "N", "M", "form", "us per call", "float32 / form"]))
    text.append(f"batch 1, bare sessions: float32 {b['float32_call_us']:.2f} us, int8 {b['int8_call_us']:.2f} us "
                f"({b['speedup_b1_now']:.2f}x); products float32 {b['float32_products_us']:.2f} us, int8 "
                f"{b['int8_products_us']:.2f} us")
    for tag, what in (("any_form", "any form"), ("forms_paying_at_b64", "forms faster than float32 at M=64")):
        forms = "; ".join(f"{k}: {c['form']} {c['product_us']:.2f} us" for k, c in b[tag]["cheapest_m1"].items())
        text.append(f"  cheapest M=1 product over {what} ({forms}): int8 call {b[tag]['best_int8_call_us']:.2f} us, "
                    f"{b[tag]['best_speedup_b1']:.2f}x float32 at best")
    text.append(f"machine: {common.cpu_name()}, profile {doc['detected']}, load average "
                f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    click.echo("\n\n".join(text))
    if json_path is not None:
        common.write_json(json_path, doc)
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
