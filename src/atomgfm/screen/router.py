"""Router: composition (+ charge, spin, periodicity) -> softmax weights over the energy heads.

Trained on which dataset each training structure came from, it says which levels of theory a
candidate resembles; screening blends the heads by these weights and skips those below a
threshold. Inputs per structure: the fraction of each of the model's training elements (one
more column for any other element), total charge (e), unpaired electrons (multiplicity - 1; 0 when
not given) and whether it is periodic in 3D. A two-layer MLP, full-batch Adam on cross-entropy.

Stored in the checkpoint under ``"router"`` as plain tensors and a config (``Router.state()``),
so ``weights_only`` loading still works:

    router, report = fit_router(structures, heads, elements)   # report: held-out accuracy, ...
    add_router(checkpoint_path, router, report)
    router = load_router(read_checkpoint(path))                 # None if the checkpoint has none
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.data.structure import MAX_Z, Structure
from atomgfm.nn.scatter import scatter_sum

log = logging.getLogger(__name__)

FORMAT = "atomgfm-router-1"


class Router(nn.Module):
    """composition features -> (n_structs, n_heads) softmax weights.

    Args:
        heads: head (dataset) names, the order of the output columns.
        elements: atomic numbers with their own fraction column.
        hidden: hidden width.
    """

    def __init__(self, heads: list[str], elements: list[int], hidden: int = 32) -> None:
        super().__init__()
        self.heads = list(heads)
        self.elements = sorted(int(z) for z in elements)
        self.hidden = int(hidden)
        column = torch.full((MAX_Z + 1,), len(self.elements), dtype=torch.long)
        column[torch.tensor(self.elements, dtype=torch.long)] = torch.arange(len(self.elements))
        self.register_buffer("column", column)  # Z -> feature column (last: other elements)
        n_in = len(self.elements) + 1 + 3
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, len(heads)))

    @property
    def n_features(self) -> int:
        return len(self.elements) + 4

    def features(self, numbers: torch.Tensor, batch_index: torch.Tensor, n_atoms: torch.Tensor,
                 charge: torch.Tensor, spin: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
        """(n_structs, n_features) float32: element fractions, other-element fraction, charge,
        unpaired electrons, periodic flag."""
        onehot = nn.functional.one_hot(self.column[numbers], len(self.elements) + 1)
        counts = scatter_sum(onehot.to(torch.float32), batch_index, n_atoms.shape[0])
        frac = counts / n_atoms.to(torch.float32).clamp(min=1).unsqueeze(-1)
        unpaired = (spin.to(torch.float32) - 1).clamp(min=0)
        return torch.cat([frac, charge.to(torch.float32).unsqueeze(-1), unpaired.unsqueeze(-1),
                          pbc.all(-1).to(torch.float32).unsqueeze(-1)], dim=-1)

    def batch_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features(batch[K.ATOMIC_NUMBERS], batch[K.BATCH], batch[K.N_ATOMS],
                             batch[K.CHARGE], batch[K.SPIN], batch[K.PBC])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n_structs, n_heads)."""
        return self.net(x.to(self.net[0].weight.dtype))

    @torch.no_grad()
    def weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n_structs, n_heads) float64 softmax weights for a collated batch."""
        x = self.batch_features(batch).to(self.column.device)
        return torch.softmax(self(x).to(torch.float64), dim=-1)

    def state(self) -> dict:
        """Plain tensors + config: what the checkpoint stores."""
        return {"format": FORMAT, "heads": list(self.heads), "elements": list(self.elements),
                "hidden": self.hidden,
                "weights": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict) -> Router:
        if state.get("format") != FORMAT:
            raise ValueError(f"router state has format {state.get('format')!r}, expected "
                             f"{FORMAT!r}")
        r = cls(state["heads"], state["elements"], state["hidden"])
        r.net.load_state_dict(state["weights"])
        return r.eval()


def structure_features(router: Router, structures: list[Structure]) -> torch.Tensor:
    """Features of ``Structure`` records, (n, n_features)."""
    numbers = torch.as_tensor(np.concatenate([s.numbers for s in structures]))
    n_atoms = torch.tensor([s.n_atoms for s in structures])
    batch = torch.repeat_interleave(torch.arange(len(structures)), n_atoms)
    return router.features(numbers, batch, n_atoms,
                           torch.tensor([s.charge for s in structures]),
                           torch.tensor([s.spin for s in structures]),
                           torch.tensor(np.stack([s.pbc for s in structures])))


def fit_router(train: dict[str, list[Structure]], heads: list[str], elements: list[int],
               val: dict[str, list[Structure]] | None = None, hidden: int = 32,
               epochs: int = 300, lr: float = 1e-2, seed: int = 0) -> tuple[Router, dict]:
    """Train a router to tell which dataset a structure came from.

    Args:
        train: structures per head name (the datasets' training splits).
        heads: head names in output order; every key of ``train`` must be one.
        elements: atomic numbers with their own feature column (the model's training elements).
        val: held-out structures per head (e.g. the validation splits) for the accuracy report.
        epochs: full-batch Adam steps on class-balanced cross-entropy.

    Returns the router (eval mode) and a report: train and held-out accuracy, chance level (the
    largest class share of the held-out set), per-head held-out accuracy and counts.
    """
    unknown = sorted(set(train) - set(heads))
    if unknown:
        raise KeyError(f"structures given for unknown head(s) {unknown}; heads are {heads}")
    torch.manual_seed(seed)
    router = Router(heads, elements, hidden)

    def tensors(split):
        xs, ys = [], []
        for name, structures in split.items():
            if structures:
                xs.append(structure_features(router, structures))
                ys.append(torch.full((len(structures),), heads.index(name), dtype=torch.long))
        if not xs:
            raise ValueError("no structures to fit or score the router on")
        return torch.cat(xs), torch.cat(ys)

    x, y = tensors(train)
    counts = torch.bincount(y, minlength=len(heads)).to(torch.float32)
    balance = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()),
                          torch.zeros_like(counts))
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(weight=balance)
    router.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(router(x), y)
        loss.backward()
        opt.step()
    router.eval()
    report = {"heads": list(heads), "n_train": int(len(y)), "final_loss": float(loss.detach()),
              "train_accuracy": _accuracy(router, x, y)}
    if val:
        xv, yv = tensors(val)
        per_head = {}
        with torch.no_grad():
            pred = router(xv).argmax(-1)
        for k, name in enumerate(heads):
            mask = yv == k
            if mask.any():
                per_head[name] = {"n": int(mask.sum()),
                                  "accuracy": float((pred[mask] == k).float().mean())}
        report.update(n_val=int(len(yv)), val_accuracy=_accuracy(router, xv, yv),
                      chance=float(torch.bincount(yv).max() / len(yv)), per_head=per_head)
    return router, report


def _accuracy(router: Router, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((router(x).argmax(-1) == y).float().mean())


def add_router(path: str | Path, router: Router, report: dict | None = None,
               out: str | Path | None = None) -> Path:
    """Store the router (and its fit report) in the checkpoint at ``path`` (atomically), or in a
    copy at ``out``. The router's heads must be the checkpoint's datasets."""
    from atomgfm.models.checkpoint import read_checkpoint, save_checkpoint

    state = read_checkpoint(path)
    names = [d["name"] for d in sorted(state["datasets"], key=lambda d: d["id"])]
    if sorted(router.heads) != sorted(names):
        raise ValueError(f"{path}: router heads {router.heads} are not the checkpoint's datasets "
                         f"{names}")
    state["router"] = router.state()
    if report is not None:
        state["router"]["report"] = _plain(report)
    target = Path(out) if out else Path(path)
    save_checkpoint(target, state)
    return target


def load_router(state: dict) -> Router | None:
    """The router stored in a checkpoint dict, or None."""
    r = state.get("router")
    return Router.from_state(r) if r else None


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
