"""The translation baseline: an equal-size network trained by backprop on Zor's own step data."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from zor.common.errors import ConfigError
from zor.common.textdecode import TranslationSpec, translate_texts
from zor.common.textfeatures import StepData
from zor.tasks.translation import BatchRows, one_hot, train_steps

__all__ = ["BackpropStepModel"]


class BackpropStepModel:
    """The equal-size baseline: same widths, same inputs, trained by backprop.

    ``Linear(D, H) → ReLU → Linear(H, V_t)`` (no biases, like Zor's layers), Adam on the
    cross-entropy of the next token (AdamW when ``weight_decay`` > 0). Its scores are logits
    (``output = "logits"``).
    ``sparse_input=True`` trains on the same sparse batches as Zor: the first layer is
    then ``torch.sparse.mm(x, W_0ᵀ)``, and autograd's weight gradient is sparse × dense too.
    """

    def __init__(self, spec: TranslationSpec, hidden: int, lr: float = 1e-3, seed: int = 0,
                 device: str = "auto", loss: str = "ce", sparse_input: bool = False,
                 weight_decay: float = 0.0) -> None:
        if loss not in ("ce", "mse"):
            raise ConfigError(f"loss must be 'ce' (cross-entropy) or 'mse' (squared error on one-hot), got {loss!r}")
        self.loss = loss
        self.sparse_input = bool(sparse_input)
        torch.manual_seed(seed)
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
        d, v = spec.encoder.width, spec.encoder.target_vocab
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden, bias=False), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, v, bias=False)).to(dev)
        # Adam, or AdamW with decoupled weight decay when weight_decay > 0 (as Zor's optimizer)
        self.opt = (torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay) if weight_decay > 0
                    else torch.optim.Adam(self.net.parameters(), lr=lr))
        self.spec = TranslationSpec(spec.source_tokenizer, spec.target_tokenizer, spec.encoder,
                                    spec.source_language, spec.target_language, spec.max_source_tokens,
                                    spec.max_target_tokens, "logits" if loss == "ce" else "probability",
                                    dict(spec.decoding))
        self.device = dev
        self.seed = seed
        self.history: dict[str, Any] = {}
        self._rows: Optional[BatchRows] = None

    def fit(self, data: StepData, steps: int, batch_size: int, time_budget: Optional[float] = None,
            progress: Optional[Callable[[int, float], None]] = None) -> dict[str, Any]:
        """Adam steps on the loss; calls resume where the last one stopped (cumulative history)."""
        enc, v = self.spec.encoder, self.spec.encoder.target_vocab
        if self._rows is None or self._rows.n != len(data) or self._rows.batch != batch_size:
            self._rows = BatchRows(len(data), batch_size, self.seed)
            self.history = {"steps": 0, "seconds": 0.0, "curve": [], "samples": len(data), "device": str(self.device)}
        ce = torch.nn.CrossEntropyLoss()

        def learn(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            y = torch.as_tensor(data.target[rows], device=self.device)
            with torch.enable_grad():
                if x.is_sparse:
                    out = self.net[2](self.net[1](torch.sparse.mm(x, self.net[0].weight.t())))
                else:
                    out = self.net(x)
                if self.loss == "ce":
                    loss = ce(out, y)
                else:
                    loss = 0.5 * ((out - one_hot(y, v, out.device)) ** 2).sum(dim=1).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
            self.opt.step()
            return loss.detach()

        return train_steps(learn, data, enc, self._rows, self.device, steps, time_budget, self.history, progress,
                      sparse=self.sparse_input)

    def step(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)).cpu().numpy()

    def translate(self, texts: Sequence[str], beam: Optional[int] = None, batch_size: int = 32) -> list[str]:
        return translate_texts(list(texts), self.spec, self.step, beam, batch_size)
