"""Translation on the torch-free runtime: step features + greedy / beam decoding over onnxruntime.

A translation export is a plain Zor per-step graph (``input`` (B, D) → ``output``
(B, V_t)) whose ``zor.task`` holds everything else: the two subword tokenizers, the
step-feature spec, the length limits, the output kind and the decoding defaults
(:class:`zor.common.textdecode.TranslationSpec`). This module reads that spec, builds the
step inputs with :mod:`zor.common.textfeatures` (numpy), and decodes with
:mod:`zor.common.textdecode`, calling the model once per target position for a whole batch
of sentences (all live beams of all sentences of a batch in one call).

Needs numpy and onnxruntime only: ``zor.common.tokenizer``, ``zor.common.textfeatures`` and
``zor.common.textdecode`` import neither torch nor onnx.

Behaviour on bad input (documented in :mod:`zor.common.textdecode`, tested):

- ``translate("")`` → ``""``;
- text with no character the source tokenizer knows → :class:`~zor.common.errors.InputError`;
- a text longer than the model's ``max_source_tokens`` is translated in pieces cut at
  sentence punctuation (``long="split"``) or refused (``long="error"``), never truncated;
- a model that is not a translation model → :class:`~zor.common.errors.ModelFileError`;
- one output per input text, and each output is one line: line separators inside a
  text (U+2028, ``\f``, ...) are spaces, so a file read with :func:`text_lines` and
  written back one translation per line keeps its line count.

Example:
    >>> from zor.runtime import Model                            # doctest: +SKIP
    >>> tr = Translator(Model("es-nah-int8.onnx", threads=1))    # doctest: +SKIP
    >>> tr.translate("Buenos días")                              # doctest: +SKIP
    >>> translate(Model("es-nah.onnx"), ["uno", "dos"], beam=4)  # doctest: +SKIP
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Optional, Sequence, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError, DTypeError, ModelFileError
from zor.common.textdecode import TranslationSpec, translate_texts

__all__ = ["Translator", "translator_for", "translate", "speed", "text_lines"]


class Translator:
    """A translation model on the runtime: ``Translator(model).translate(texts)``.

    ``model`` is a :class:`zor.runtime.Model` (anything with ``.metadata.task``,
    ``.sizes``, ``.path`` and ``run(x) -> {"output": ...}`` works).
    """

    def __init__(self, model: Any) -> None:
        where = str(getattr(model, "path", "model"))
        task = getattr(getattr(model, "metadata", None), "task", None)
        self.spec = TranslationSpec.from_task(task, where=where)
        sizes = list(model.sizes)
        enc = self.spec.encoder
        if sizes[0] != enc.width or sizes[-1] != enc.target_vocab:
            raise ModelFileError(f"{where}: the graph's input/output widths ({sizes[0]}, {sizes[-1]}) do not match "
                                 f"its translation task: expected ({enc.width}, {enc.target_vocab})")
        if getattr(model, "stateful", False):
            raise ModelFileError(f"{where}: a translation step model must be stateless, got a stateful export")
        self.model = model
        self.calls = 0                 # model calls (decoding steps × batches) since creation
        self.rows = 0                  # rows fed to the model since creation

    def step(self, x: np.ndarray) -> np.ndarray:
        """Scores (B, V_t) for step inputs (B, D): one call of the model."""
        self.calls += 1
        self.rows += len(x)
        return self.model.run(x)[fmt.OUTPUT]

    def translate(self, texts: Union[str, Sequence[str]], beam: Optional[int] = None, batch_size: int = 32,
                  long: str = "split") -> Union[str, list[str]]:
        """Translate one text (→ str) or a list (→ list), ``batch_size`` sentences per decoding batch.

        ``beam`` 1 is greedy; None takes the model's default (``decoding.beam``).
        """
        if isinstance(texts, str):
            return translate_texts([texts], self.spec, self.step, beam, batch_size, long)[0]
        if not isinstance(texts, (list, tuple)):
            raise DTypeError(f"expected a str or a list of str, got {type(texts).__name__}")
        return translate_texts(list(texts), self.spec, self.step, beam, batch_size, long)

    def __repr__(self) -> str:
        s = self.spec
        return (f"Translator({s.source_language}→{s.target_language}, vocab {s.encoder.source_vocab}/"
                f"{s.encoder.target_vocab}, input {s.encoder.width}, model {self.model!r})")


_CACHE: "weakref.WeakKeyDictionary[Any, Translator]" = weakref.WeakKeyDictionary()


def translator_for(model: Any) -> Translator:
    """The model's :class:`Translator`, built once per model object (the spec is parsed once)."""
    try:
        hit = _CACHE.get(model)
    except TypeError:                 # not weak-referenceable: no cache
        return Translator(model)
    if hit is None:
        hit = Translator(model)
        _CACHE[model] = hit
    return hit


def translate(model: Any, texts: Union[str, Sequence[str]], beam: Optional[int] = None, batch_size: int = 32,
              long: str = "split") -> Union[str, list[str]]:
    """``Model.translate``: translate with a runtime model (see :class:`Translator`)."""
    return translator_for(model).translate(texts, beam=beam, batch_size=batch_size, long=long)


def speed(model: Any, texts: Sequence[str], batch_size: int = 1, beam: int = 1, repeats: int = 3) -> dict[str, Any]:
    """Translation speed of ``model`` on ``texts``: the median over ``repeats`` passes.

    Returns ``ms_per_sentence`` (wall time of a pass / sentences), ``tokens_per_s``
    (target tokens produced / second), ``steps_per_sentence`` (model calls per
    sentence) and the per-pass times; ``batch_size`` sentences are decoded together.
    """
    if not texts:
        raise ConfigError("speed: expected at least one text")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an int ≥ 1, got {repeats!r}")
    tr = translator_for(model)
    tr.translate(list(texts[:2]), beam=beam, batch_size=batch_size)           # warm-up
    times, tokens, calls = [], 0, 0
    for _ in range(repeats):
        c0 = tr.calls
        t = time.perf_counter()
        out = tr.translate(list(texts), beam=beam, batch_size=batch_size)
        times.append(time.perf_counter() - t)
        calls = tr.calls - c0
        tokens = sum(len(tr.spec.target_tokenizer.encode(o)) for o in out)
    med = float(np.median(times))
    return {"sentences": len(texts), "batch_size": batch_size, "beam": beam,
            "ms_per_sentence": 1e3 * med / len(texts), "tokens_per_s": tokens / med if med > 0 else float("inf"),
            "target_tokens": tokens, "calls_per_pass": calls, "seconds": times}


def text_lines(text: str) -> list[str]:
    """The lines of a text file: split on "\\n" only (a trailing "\\r" dropped), unlike ``str.splitlines``, which
    also breaks at U+2028, \\f, \\v and others, so one input line always gives one output line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
