"""Atom-type, total-charge and spin embeddings (added together as initial atom features)."""

from __future__ import annotations

import torch
from torch import nn

from atomgfm import keys as K
from atomgfm.data.structure import MAX_Z


class AtomEmbedding(nn.Module):
    """s⁰_i = e(Z_i) + c(Q_{b(i)}) + m(M_{b(i)}): element, total charge and spin multiplicity.

    Charge is an integer in [-max_charge, max_charge]; multiplicity an integer in
    [0, max_spin] with 0 meaning "not given". Values outside those ranges are errors, not clamps.
    The charge and spin tables start at zero so a model without charged data is unaffected.
    """

    def __init__(self, num_features: int, max_charge: int = 6, max_spin: int = 8) -> None:
        super().__init__()
        self.max_charge, self.max_spin = max_charge, max_spin
        self.element = nn.Embedding(MAX_Z + 1, num_features)
        self.charge = nn.Embedding(2 * max_charge + 1, num_features)
        self.spin = nn.Embedding(max_spin + 1, num_features)
        nn.init.zeros_(self.charge.weight)
        nn.init.zeros_(self.spin.weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # -> (n_atoms, F)
        q = torch.round(batch[K.CHARGE]).long()
        m = torch.round(batch[K.SPIN]).long()
        if not torch.jit.is_scripting() and (
            q.abs().max() > self.max_charge or m.min() < 0 or m.max() > self.max_spin
        ):
            raise ValueError(
                f"total charge must be within ±{self.max_charge} e and spin multiplicity within "
                f"0..{self.max_spin}; got charge {q.tolist()} and spin {m.tolist()}")
        b = batch[K.BATCH]
        return (self.element(batch[K.ATOMIC_NUMBERS]) + self.charge(q + self.max_charge)[b]
                + self.spin(m)[b])
