"""Per-dataset validation metrics: energy MAE (meV/atom), force MAE (meV/Å), stress MAE (meV/Å³);
for structure-level property heads (fine-tuning) MAE and RMSE in the property's unit
(regression) or accuracy and ROC-AUC (binary classification).

Also collects predictions for parity plots.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from atomgfm import keys as K


class MetricAccumulator:
    """Accumulates absolute errors per dataset id over many batches."""

    def __init__(self, names: list[str], keep_values: bool = False) -> None:
        """With ``keep_values``, energies are kept relative to the model's reference energy
        (``REFERENCE_ENERGY``), so parity plots show what the model learned rather than the
        composition offset."""
        self.names = names
        self.keep = keep_values
        self.sums = defaultdict(float)
        self.counts = defaultdict(int)
        self.values: dict[tuple[str, str], list] = defaultdict(list)
        # binary classification: (label, logit) pairs per dataset, for ROC-AUC (per process)
        self.scores: dict[str, list] = defaultdict(list)

    def update(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        ds = batch[K.DATASET].cpu().numpy()
        n = batch[K.N_ATOMS].cpu().numpy()
        atom_ds = np.repeat(ds, n)
        e_pred = out[K.ENERGY].detach().double().cpu().numpy()
        e_true = batch[K.ENERGY].double().cpu().numpy()
        has_e = batch[K.HAS_ENERGY].cpu().numpy()
        has_f = np.repeat(batch[K.HAS_FORCES].cpu().numpy(), n)
        offset = (out[K.REFERENCE_ENERGY].detach().double().cpu().numpy()
                  if K.REFERENCE_ENERGY in out else np.zeros_like(e_true))
        # One device-to-host copy per batch, not one per dataset.
        if K.FORCES in out:
            f_pred = out[K.FORCES].detach().double().cpu().numpy()
            f_true = batch[K.FORCES].double().cpu().numpy()
        if K.STRESS in out:
            s_pred = out[K.STRESS].detach().double().cpu().numpy()
            s_true = batch[K.STRESS].double().cpu().numpy()
            has_s = batch[K.HAS_STRESS].cpu().numpy()
        if K.PROPERTY_OUTPUT in out and K.HAS_PROPERTY in batch:
            self._update_properties(out, batch, ds)
        for k, name in enumerate(self.names):
            m = (ds == k) & has_e
            if m.any():
                err = np.abs(e_pred[m] - e_true[m]) / n[m]
                self._add(name, "energy", err, (e_true[m] - offset[m]) / n[m],
                          (e_pred[m] - offset[m]) / n[m])
            if K.FORCES in out:
                ma = (atom_ds == k) & has_f
                if ma.any():
                    fp, ft = f_pred[ma].ravel(), f_true[ma].ravel()
                    self._add(name, "forces", np.abs(fp - ft), ft, fp)
            if K.STRESS in out:
                ms = (ds == k) & has_s
                if ms.any():
                    sp, st = s_pred[ms].ravel(), s_true[ms].ravel()
                    self._add(name, "stress", np.abs(sp - st), st, sp)

    def _update_properties(self, out, batch, ds: np.ndarray) -> None:
        pred = out[K.PROPERTY_OUTPUT].detach().double().cpu().numpy()
        task = out[K.PROPERTY_TASK].cpu().numpy()
        y = batch[K.PROPERTY].double().cpu().numpy()
        has = batch[K.HAS_PROPERTY].cpu().numpy()
        for k, name in enumerate(self.names):
            m = (ds == k) & has
            if not m.any():
                continue
            if task[m][0] == 2:  # binary classification: logit > 0 predicts class 1
                correct = ((pred[m] > 0) == (y[m] > 0.5)).astype(np.float64)
                self.sums[(name, "correct")] += float(correct.sum())
                self.counts[(name, "correct")] += correct.size
                self.scores[name].append(np.stack([y[m], pred[m]]))
            else:
                err = pred[m] - y[m]
                self._add(name, "property", np.abs(err), y[m], pred[m])
                self.sums[(name, "property_sq")] += float((err**2).sum())
                self.counts[(name, "property_sq")] += err.size

    def _add(self, name, quantity, abs_err, true, pred):
        self.sums[(name, quantity)] += float(abs_err.sum())
        self.counts[(name, quantity)] += abs_err.size
        if self.keep:
            self.values[(name, quantity)].append(np.stack([true, pred]))

    def reduce(self, reduce_sum) -> MetricAccumulator:
        """Combine the error sums of every process with ``reduce_sum`` (a function that sums a
        float64 tensor over ranks in place, e.g. ``train.distributed.all_reduce_sum``). The
        parity values stay per process."""
        keys = [(name, q) for name in self.names
                for q in ("energy", "forces", "stress", "property", "property_sq", "correct")]
        packed = torch.tensor([[self.sums[k], self.counts[k]] for k in keys], dtype=torch.float64)
        packed = reduce_sum(packed)
        for k, (total, count) in zip(keys, packed.tolist(), strict=True):
            if count:
                self.sums[k], self.counts[k] = total, int(count)
        return self

    def compute(self) -> dict[str, dict[str, float]]:
        """{dataset: {"energy_mae_meV_atom", "forces_mae_meV_A", "stress_mae_meV_A3"}}."""
        label = {"energy": "energy_mae_meV_atom", "forces": "forces_mae_meV_A",
                 "stress": "stress_mae_meV_A3"}
        out: dict[str, dict[str, float]] = {name: {} for name in self.names}
        for (name, q), total in self.sums.items():
            count = self.counts[(name, q)]
            if not count:
                continue
            if q in label:
                out[name][label[q]] = 1000.0 * total / count
            elif q == "property":  # regression: the property's own unit
                out[name]["property_mae"] = total / count
            elif q == "property_sq":
                out[name]["property_rmse"] = float(np.sqrt(total / count))
            elif q == "correct":
                out[name]["accuracy"] = total / count
        for name, vals in self.scores.items():
            if vals:
                y, logit = np.concatenate(vals, axis=1)
                out[name]["roc_auc"] = roc_auc(y > 0.5, logit)
        return out

    def parity(self, name: str, quantity: str) -> np.ndarray | None:
        """(2, n) array of true and predicted values, or None."""
        vals = self.values.get((name, quantity))
        return np.concatenate(vals, axis=1) if vals else None


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half), by the Mann-Whitney rank sum; nan with one class only."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
