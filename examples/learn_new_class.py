"""Learning a new class on the device: a Fashion-MNIST classifier learns its 10th class from 10 images.

1. Workstation (zor.engine): ``Zor([Layer(784), Layer(256, target_activation=0.5),
   Layer(10, sigmoid)])`` trained on classes 0-8 only (one-hot targets over 10 outputs;
   output 9 is never the answer), exported with ``zor-export --learnable``.
2. Device (a subprocess that imports zor.runtime only; it asserts that neither torch nor
   onnx was ever imported): ``Learner`` learns 10 images of class 9 — mixed with 10
   images of the old classes it keeps (one per class) so the old ones are rehearsed —
   then ``save`` writes the adapted model.
3. Reported: accuracy on the new class and on the old classes (1,000 unseen test images
   each), before and after (forgetting = old-class accuracy lost).

Usage:
    python examples/learn_new_class.py [--out DIR] [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

NEW = 9  # the class the device learns

DEVICE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from zor.runtime import Learner
    learn, x_path, y_path, out, steps, batch = sys.argv[1:7]
    lr = Learner(learn, threads=1, seed=0)
    x, y = np.load(x_path), np.load(y_path)
    hist = lr.fit(x, y, steps=int(steps), batch_size=int(batch), progress=False)
    lr.save(out)
    assert "torch" not in sys.modules and "onnx" not in sys.modules
    print(json.dumps({"steps": hist["steps"], "torch_imported": "torch" in sys.modules}))
""")


def data(quick: bool, seed: int = 0) -> dict:
    """Training split of classes 0-8, the device's 20 images, and the unseen test images."""
    from zor.tasks import datasets
    x, y = datasets.load_fashion_mnist("train")
    xt, yt = datasets.load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    old = np.flatnonzero(y != NEW)
    old = rng.choice(old, 3000 if quick else 20000, replace=False)
    new_idx = rng.choice(np.flatnonzero(y == NEW), 10, replace=False)
    keep = np.array([rng.choice(np.flatnonzero(y == c)) for c in range(NEW)])   # one rehearsal image per old class
    device = np.concatenate([new_idx, keep])
    test_old = np.flatnonzero(yt != NEW)[:1000]
    test_new = np.flatnonzero(yt == NEW)[:1000]
    return {"x": x[old], "y": y[old], "device_x": x[device], "device_y": y[device],
            "test_old": (xt[test_old], yt[test_old]), "test_new": (xt[test_new], yt[test_new])}


def one_hot(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((len(labels), 10), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((scores.argmax(axis=1) == labels).mean())


def train_nine(d: dict, steps: int):
    """The workstation part: the classifier of classes 0-8 (zor.engine)."""
    from zor import Layer, Zor
    net = Zor([Layer(784), Layer(256, target_activation=0.5), Layer(10, activation_function="sigmoid")], seed=0)
    net.fit(d["x"], one_hot(d["y"]), steps=steps, batch_size=48, progress=False)
    return net


def scores_of(path: Path, x: np.ndarray) -> np.ndarray:
    from zor.runtime import Model
    return Model(path, threads=1).run(x)["output"]


def report(path: Path, d: dict) -> dict:
    return {"new_class": accuracy(scores_of(path, d["test_new"][0]), d["test_new"][1]),
            "old_classes": accuracy(scores_of(path, d["test_old"][0]), d["test_old"][1])}


def run(out: Path, steps: int, quick: bool) -> dict:
    from zor.export import export, export_learnable
    out.mkdir(parents=True, exist_ok=True)
    d = data(quick)
    net = train_nine(d, 300 if quick else 2000)
    export(net, out / "nine.onnx")
    export_learnable(net, out / "nine-learn.onnx")
    np.save(out / "device_x.npy", d["device_x"])
    np.save(out / "device_y.npy", one_hot(d["device_y"]))
    r = subprocess.run([sys.executable, "-c", DEVICE, str(out / "nine-learn.onnx"), str(out / "device_x.npy"),
                        str(out / "device_y.npy"), str(out / "ten.onnx"), str(steps), "20"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"device part failed:\n{r.stderr}")
    device = json.loads(r.stdout.strip().splitlines()[-1])
    assert device["torch_imported"] is False
    res = {"before": report(out / "nine.onnx", d), "after": report(out / "ten.onnx", d), "device": device}
    res["forgetting"] = res["before"]["old_classes"] - res["after"]["old_classes"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("learn-new-class-out"))
    ap.add_argument("--steps", type=int, default=40, help="learning steps on the device")
    ap.add_argument("--quick", action="store_true", help="a smaller workstation run (seconds)")
    args = ap.parse_args(argv)
    res = run(args.out, args.steps, args.quick)
    b, a = res["before"], res["after"]
    print(f"new class (9): {b['new_class']:.1f} % -> {a['new_class']:.1f} %; old classes (0-8): "
          f"{b['old_classes']:.1f} % -> {a['old_classes']:.1f} % (forgetting {res['forgetting']:.1f} points); "
          f"device learned {res['device']['steps']} steps without torch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
