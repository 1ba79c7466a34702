"""Translation with a Zor network: the step framing, training by Zor's rule, evaluation.

Framing ("redesign the problem for the network"): a sentence-to-sentence task
becomes many fixed-size classification steps. At target position t the network sees
x_t = StepEncoder(source, y_<t, t) (:mod:`zor.common.textfeatures`: a bag of source
subwords, a window of source subwords around the aligned position, the last k target
tokens, the position) and outputs one charge per target subword; the training target
is the one-hot vector of y_t (``</s>`` after the last token). Decoding runs the
network once per position, greedily or with a beam (:mod:`zor.common.textdecode`).

Why it suits Zor: every step is a plain stateless (B, D) → (B, V) mapping with
non-negative sparse inputs and a one-hot target, exactly what Zor's forward pass and
``reinforce(error)`` handle, and the graph exports unchanged (Greater / Where / MatMul
per layer) because the translation-specific work is all in the numpy feature
encoding, which the runtime repeats.

Learning: Zor's rule (:mod:`zor.engine.rules`), no autograd anywhere in Zor's training. The
error handed to ``reinforce`` is that of a softmax read-out of the output charges,
error = one-hot(y) − softmax(c) (``readout="softmax"``, the default; at the output
this equals the cross-entropy gradient, but nothing is differentiated: the rule sends
it down through the transposes of the forward weights, gated by the hidden spikes,
weighted by the clipped co-activity E′ and applied through Adam, as for any Zor
task). ``readout="charges"`` uses the engine's plain error one-hot(y) − c (the charges
then estimate P(next token) by least squares); it learns markedly slower here, as the
benchmark shows.

Network: ``[Layer(D), Layer(H), Layer(V_t)]``; input θ = 0 (a feature spikes when
present), hidden θ learned by homeostasis, output θ = −inf (every output charge is
read). The equal-size baseline (``benchmarks.baselines.translation.BackpropStepModel``) has the same widths, the
same inputs and targets, and is trained by autograd (Adam, cross-entropy, the
standard way to train such a classifier) for the same wall time.

Example (a made-up parallel text; real corpora come from :mod:`zor.tasks.textdata`):
    >>> from zor.tasks.textdata import Pair
    >>> pairs = [Pair("el agua", "in atl", "d"), Pair("la casa", "in calli", "d")] * 20
    >>> cfg = TranslationConfig(source_vocab=40, target_vocab=40, hidden=32, window_dim=64, steps=150,
    ...                         batch_size=32, device="cpu")
    >>> model = ZorTranslator.train(pairs, cfg)
    >>> model.translate(["la casa"])
    ['in calli']
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from zor.common.deprecation import renamed_parameters
from zor.common.errors import CheckpointError, ConfigError, DataError, ModelFileError
from zor.common.textdecode import TranslationSpec, translate_texts
from zor.common.textfeatures import StepData, StepEncoder
from zor.common.tokenizer import EOS, SubwordTokenizer
from zor.common.curriculum import CurriculumSampler
from zor.engine.layer import RENAMED, Layer
from zor.engine.network import Zor

from .textdata import Pair

__all__ = [
    "TranslationConfig",
    "build_spec",
    "step_data",
    "ZorTranslator",
    "BatchRows",
    "train_steps",
    "one_hot",
    "batch_input",
]


@renamed_parameters(RENAMED)
@dataclass
class TranslationConfig:
    """Everything that shapes a translation model and its training (the Zor and step-encoding settings).

    How the defaults were chosen, with every figure tried: ``docs/notes/translation-settings.md``.
    """

    source_language: str = "es"
    target_language: str = "nah"
    source_vocab: int = 1000          # subword vocabulary sizes (tokenizers trained on the training split)
    target_vocab: int = 1000
    hidden: int = 512                 # H: hidden layer width (chosen on dev chrF: 256 / 512 / 1024)
    history: int = 2                  # k: last target tokens in the input
    window: int = 2                   # w: aligned source window ±w
    window_dim: int = 1024            # hashed slots of the window block
    position_buckets: int = 16
    max_source_tokens: int = 64       # longer sources are translated in pieces (zor.common.textdecode)
    max_target_tokens: int = 128
    train_max_tokens: int = 96        # training pairs with a longer side are left out
    steps: int = 2000                 # training batches (time_budget stops earlier)
    time_budget: Optional[float] = None   # seconds of training, None = run all steps
    batch_size: int = 256
    rule: str = "gated"               # Zor learning-rule variant (zor.engine.rules.RULES)
    lr: float = 3e-3                  # Zor's optimizer learning rate (applies the rule's update U)
    weight_decay: float = 0.01        # AdamW weight decay of Zor's optimizer
    error_scaling: bool = False       # Zor: scale U by the error level max(mean|error|, 0.01) (off: with
                                      #   1,000 outputs the floor 0.01 shrinks U below Adam's ε)
    max_update_norm: Optional[float] = 1.0  # max Frobenius norm of one update U (Layer.max_update_norm); None = no clip
    max_weight: Optional[float] = 1.0   # clamp |W_i| ≤ max_weight; None = no clamp
    target_activation: float = 0.5    # hidden homeostasis target firing rate
    homeostasis_rate: float = 0.01    # hidden homeostasis speed η (Layer.homeostasis_rate)
    curriculum: bool = False          # Zor's curriculum sampler over training steps
    sparse_input: bool = True         # train on sparse event batches (zor.engine.events; same results as dense,
                                      #   ~2.5x less time per step here: the inputs are < 1 % nonzero)
    novelty_factor: float = 0.0       # ν of subtractive novelty gating, on both connections (0 = off)
    init_scale: float = 0.5
    output_activation: str = "identity"  # f_L of the output layer
    readout: str = "softmax"          # error = one-hot − softmax(c) ("softmax") or one-hot − c ("charges")
    decoding: dict = field(default_factory=lambda: {"beam": 1, "no_repeat_ngram": 3, "length_penalty": 3.0})
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("source_vocab", "target_vocab", "hidden", "steps", "batch_size", "max_source_tokens",
                     "max_target_tokens", "train_max_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ConfigError(f"TranslationConfig.{name} must be a positive int, got {v!r}")
        if self.readout not in ("softmax", "charges"):
            raise ConfigError(f"readout must be 'softmax' or 'charges', got {self.readout!r}")
        if self.time_budget is not None and not (isinstance(self.time_budget, (int, float)) and self.time_budget > 0):
            raise ConfigError(f"time_budget must be seconds > 0 or None, got {self.time_budget!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_spec(train: Sequence[Pair], config: TranslationConfig) -> TranslationSpec:
    """Tokenizers trained on the training pairs, and the step encoding that fits them.

    The length ratio r is Σ target tokens / Σ source tokens over the training pairs.
    """
    if not train:
        raise DataError("expected training pairs, got none")
    src_tok = SubwordTokenizer.train([p.source for p in train], vocab_size=config.source_vocab)
    tgt_tok = SubwordTokenizer.train([p.target for p in train], vocab_size=config.target_vocab)
    n_src = sum(len(src_tok.encode(p.source)) for p in train)
    n_tgt = sum(len(tgt_tok.encode(p.target)) for p in train)
    encoder = StepEncoder(source_vocab=src_tok.vocab_size, target_vocab=tgt_tok.vocab_size,
                          history=config.history, window=config.window, window_dim=config.window_dim,
                          length_ratio=round(n_tgt / max(1, n_src), 4), position_buckets=config.position_buckets)
    return TranslationSpec(src_tok, tgt_tok, encoder, config.source_language, config.target_language,
                           config.max_source_tokens, config.max_target_tokens,
                           "logits" if config.readout == "softmax" else "probability", dict(config.decoding))


def step_data(pairs: Sequence[Pair], spec: TranslationSpec, max_tokens: Optional[int] = None) -> StepData:
    """All training steps of ``pairs`` (pairs with a side over ``max_tokens`` are left out)."""
    src, tgt = [], []
    for p in pairs:
        s, t = spec.source_tokenizer.encode(p.source), spec.target_tokenizer.encode(p.target)
        if max_tokens is not None and (len(s) > max_tokens or len(t) > max_tokens):
            continue
        src.append(s)
        tgt.append(t)
    if not src:
        raise DataError(f"no training pair fits within {max_tokens} tokens a side")
    return spec.encoder.steps(src, tgt, EOS)


def one_hot(labels: Union[np.ndarray, torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    """(B, width) float32 with 1 at each row's label."""
    y = torch.zeros(len(labels), width, device=device)
    y[torch.arange(len(labels), device=device), torch.as_tensor(labels, device=device)] = 1.0
    return y


class BatchRows:
    """Training rows in shuffled epochs, ``batch`` at a time; resumable across ``fit`` calls."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, batch
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(n)
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        rows = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return rows


def batch_input(enc: StepEncoder, data: StepData, rows: np.ndarray, device: torch.device,
                sparse: bool) -> torch.Tensor:
    """The inputs of training steps ``rows``: dense (B, D), or a sparse COO tensor of the same
    values (about 30 nonzeros per row out of D ≈ 4,000: the event input of :mod:`zor.engine.events`)."""
    if not sparse:
        return torch.from_numpy(enc.dense(data, rows)).to(device)
    r, c, v = enc.events(data, rows)
    idx = torch.from_numpy(np.stack([r, c]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(v), (len(rows), enc.width), is_coalesced=True,
                                   check_invariants=False).to(device)


def train_steps(learn: Callable[[torch.Tensor, np.ndarray], Any], data: StepData, enc: StepEncoder, rows: BatchRows,
           device: torch.device, steps: int, time_budget: Optional[float], history: dict[str, Any],
           progress: Optional[Callable[[int, float], None]] = None, sparse: bool = False) -> dict[str, Any]:
    """Run ``learn(x, rows)`` on batches until ``steps`` or ``time_budget`` (s); accumulate ``history``.

    ``learn`` returns the batch's loss figure (a number or a 0-d tensor, read only every 50th
    step so a GPU is not synchronised each step); every 50th is kept in ``history["curve"]``.
    """
    start = time.perf_counter()
    done = 0
    for done in range(1, steps + 1):
        r = rows.next()
        value = learn(batch_input(enc, data, r, device, sparse), r)
        total = history["steps"] + done
        if total % 50 == 0:
            history["curve"].append((total, float(value)))
            if progress is not None:
                progress(total, float(value))
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    history["steps"] += done
    history["seconds"] += time.perf_counter() - start
    return history


class ZorTranslator:
    """A Zor step network plus its translation spec (tokenizers, features, limits)."""

    def __init__(self, net: Zor, spec: TranslationSpec) -> None:
        if net.layers[0].size != spec.encoder.width or net.layers[-1].size != spec.encoder.target_vocab:
            raise ConfigError(f"network {net.sizes} does not fit the step encoding: expected input "
                              f"{spec.encoder.width} and output {spec.encoder.target_vocab}")
        self.net, self.spec = net, spec
        self.net.task = spec.to_task()
        self.history: dict[str, Any] = {}
        self._rows: Optional[BatchRows] = None
        self._sampler = None

    # ------------------------------------------------------------------ building and training
    @staticmethod
    def make_network(spec: TranslationSpec, config: TranslationConfig) -> Zor:
        """``[Layer(D), Layer(H), Layer(V_t)]`` with the config's Zor settings."""
        kw = dict(max_update_norm=config.max_update_norm, max_weight=config.max_weight,
                  novelty_factor=config.novelty_factor)
        layers = [
            Layer(spec.encoder.width, **kw),
            Layer(config.hidden, target_activation=config.target_activation,
                  homeostasis_rate=config.homeostasis_rate, **kw),
            Layer(spec.encoder.target_vocab, activation_function=config.output_activation, **kw),
        ]
        return Zor(layers, rule=config.rule, lr=config.lr, weight_decay=config.weight_decay,
                   error_scaling=config.error_scaling, seed=config.seed, device=config.device,
                   init_scale=config.init_scale, task=spec.to_task())

    @classmethod
    def train(cls, train: Sequence[Pair], config: Optional[TranslationConfig] = None,
              spec: Optional[TranslationSpec] = None, data: Optional[StepData] = None,
              progress: Optional[Callable[[int, float], None]] = None) -> "ZorTranslator":
        """Build the spec (unless given), the network, and train it with Zor's rule.

        One step: B training steps drawn without replacement (epoch by epoch), dense
        inputs x (B, D), targets one-hot(y) (B, V_t), ``net.train_batch(x, target)``:
        error = target − output, ``reinforce(error)`` (no autograd). Stops after
        ``config.steps`` batches or ``config.time_budget`` seconds.
        """
        config = config or TranslationConfig()
        spec = spec or build_spec(train, config)
        data = data if data is not None else step_data(train, spec, config.train_max_tokens)
        net = cls.make_network(spec, config)
        model = cls(net, spec)
        model.fit(data, config, progress)
        return model

    def fit(self, data: StepData, config: TranslationConfig, progress: Optional[Callable[[int, float], None]] = None,
            steps: Optional[int] = None, time_budget: Optional[float] = None) -> dict[str, Any]:
        """Train on ``data`` (see :meth:`train`); calls resume where the last one stopped.

        ``steps`` / ``time_budget`` default to the config's. Returns the cumulative
        history: ``steps``, ``seconds``, ``curve`` [(step, mean Σ|error| per sample)].
        """
        net, enc = self.net, self.spec.encoder
        if self._rows is None or self._rows.n != len(data):
            self._rows = BatchRows(len(data), config.batch_size, config.seed)
            self._sampler = None
            if config.curriculum:
                self._sampler = CurriculumSampler(len(data), rng=np.random.default_rng(config.seed))
            self.history = {"steps": 0, "seconds": 0.0, "curve": [], "samples": len(data),
                            "device": str(net.device), "config": config.to_dict()}
        sampler = self._sampler

        def learn(x: torch.Tensor, rows: np.ndarray) -> float:
            if sampler is not None:                         # the curriculum replaces the shuffled rows
                rows = sampler.sample(config.batch_size)
                x = batch_input(enc, data, rows, net.device, config.sparse_input)
            y = one_hot(data.target[rows], enc.target_vocab, net.device)
            if config.readout == "softmax":                 # error = one-hot − softmax(charges), then Zor's rule
                out = net.forward(x, train=True)
                err = y - torch.softmax(out, dim=1)
                net.reinforce(err)
            else:                                           # error = one-hot − charges
                err = net.train_batch(x, y)
            per = err.abs().sum(dim=1)
            if sampler is not None:
                sampler.update(rows, per.cpu().numpy())
            return per.mean()

        return train_steps(learn, data, enc, self._rows, net.device, config.steps if steps is None else steps,
                      config.time_budget if time_budget is None else time_budget, self.history, progress,
                      sparse=config.sparse_input)

    # ------------------------------------------------------------------ use
    def step(self, x: np.ndarray) -> np.ndarray:
        """Scores (B, V_t) for step inputs x (B, D): the network's output charges."""
        with torch.no_grad():
            out = self.net.forward(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.net.device),
                                   train=False)
        return out.cpu().numpy()

    def translate(self, texts: Union[str, Sequence[str]], beam: Optional[int] = None, batch_size: int = 32,
                  long: str = "split") -> Union[str, list[str]]:
        """Translate one text (returns a str) or a list of texts (returns a list).

        Bad input follows :func:`zor.common.textdecode.translate_texts`: empty text → "",
        only unknown characters → InputError, too long → translated in pieces.
        """
        if isinstance(texts, str):
            return translate_texts([texts], self.spec, self.step, beam, batch_size, long)[0]
        return translate_texts(list(texts), self.spec, self.step, beam, batch_size, long)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """A Zor checkpoint whose ``task`` carries the whole translation spec (atomic write)."""
        self.net.task = self.spec.to_task()
        self.net.save(path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: str = "auto") -> "ZorTranslator":
        """Read a checkpoint written by :meth:`save`; a non-translation checkpoint raises CheckpointError."""
        net = Zor.load(path, device=device)
        try:
            spec = TranslationSpec.from_task(net.task, where=str(path))
        except ModelFileError as exc:
            raise CheckpointError(str(exc)) from None
        return cls(net, spec)
