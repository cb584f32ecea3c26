"""Physics assertions every backbone's tests reuse (run them in fp64).

Each function takes a force field (``ForceField``) and ``Structure`` records, and raises
``AssertionError`` with the size of the violation when a physical contract is broken:
forces = -∇E (central finite differences), stress = (1/V) ∂E/∂ε, invariance of E under rotation,
translation and permutation, equivariance of F, extensivity on supercells, the same answer alone
or in a batch, and heads that only see their own dataset's atoms.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from atomgfm import keys as K
from atomgfm.data.graph import collate, structure_to_graph
from atomgfm.data.structure import Structure


def evaluate(ff, structures: list[Structure], dataset_ids: list[int] | None = None,
             stress: bool = False) -> dict[str, np.ndarray]:
    """Energies (S,), forces (N, 3), stress (S, 3, 3) as float64 NumPy arrays."""
    cutoff = ff.cutoff
    ids = dataset_ids if dataset_ids is not None else [0] * len(structures)
    needs = ff.backbone.needs
    batch = collate([structure_to_graph(s, cutoff, d, needs) for s, d in zip(structures, ids,
                                                                              strict=True)],
                    torch.float64)
    out = ff(batch, forces=True, stress=stress)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def _with(s: Structure, **changes) -> Structure:
    fields = dict(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc,
                  charge=s.charge, spin=s.spin, dataset=s.dataset)
    fields.update(changes)
    return Structure(**fields)


def assert_forces_are_gradient(ff, s: Structure, h: float = 1e-5, atol: float = 1e-6,
                               n_atoms: int = 3, dataset_id: int = 0) -> None:
    """F = -dE/dR by central differences on the first ``n_atoms`` atoms, all 3 components."""
    forces = evaluate(ff, [s], [dataset_id])[K.FORCES]
    for a in range(min(n_atoms, s.n_atoms)):
        for c in range(3):
            e = []
            for sign in (1, -1):
                pos = s.positions.copy()
                pos[a, c] += sign * h
                e.append(evaluate(ff, [_with(s, positions=pos)], [dataset_id])[K.ENERGY][0])
            fd = -(e[0] - e[1]) / (2 * h)
            assert abs(fd - forces[a, c]) < atol + 1e-4 * abs(fd), (
                f"force[{a},{c}] = {forces[a, c]:.8g} but -dE/dR by finite differences = {fd:.8g}")


def assert_stress_is_strain_derivative(ff, s: Structure, h: float = 1e-5,
                                       atol: float = 1e-7, dataset_id: int = 0) -> None:
    """σ_ab = (1/V) ∂E/∂ε_ab for a symmetric strain, by central differences."""
    stress = evaluate(ff, [s], [dataset_id], stress=True)[K.STRESS][0]
    volume = s.volume
    for a in range(3):
        for b in range(a, 3):
            e = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] = eps[b, a] = sign * h / (1 if a == b else 2)
                deform = np.eye(3) + eps
                e.append(evaluate(ff, [_with(s, positions=s.positions @ deform,
                                             cell=s.cell @ deform)], [dataset_id])[K.ENERGY][0])
            fd = (e[0] - e[1]) / (2 * h) / volume
            assert abs(fd - stress[a, b]) < atol + 1e-4 * abs(fd), (
                f"stress[{a},{b}] = {stress[a, b]:.8g} but (1/V) dE/dε = {fd:.8g}")


def assert_invariance(ff, s: Structure, seed: int = 0, atol: float = 1e-8,
                      dataset_id: int = 0) -> None:
    """E invariant and F equivariant under rotation; both under translation and permutation."""
    rng = np.random.default_rng(seed)
    ref = evaluate(ff, [s], [dataset_id])
    rot = Rotation.random(random_state=seed).as_matrix()
    rotated = _with(s, positions=s.positions @ rot.T, cell=s.cell @ rot.T)
    out = evaluate(ff, [rotated], [dataset_id])
    np.testing.assert_allclose(out[K.ENERGY], ref[K.ENERGY], atol=atol, rtol=1e-10,
                               err_msg="energy changed under rotation")
    np.testing.assert_allclose(out[K.FORCES], ref[K.FORCES] @ rot.T, atol=atol,
                               err_msg="forces do not rotate with the structure")
    shifted = _with(s, positions=s.positions + rng.normal(0, 2.0, 3))
    out = evaluate(ff, [shifted], [dataset_id])
    np.testing.assert_allclose(out[K.ENERGY], ref[K.ENERGY], atol=atol, rtol=1e-10,
                               err_msg="energy changed under translation")
    np.testing.assert_allclose(out[K.FORCES], ref[K.FORCES], atol=atol,
                               err_msg="forces changed under translation")
    perm = rng.permutation(s.n_atoms)
    permuted = _with(s, numbers=s.numbers[perm], positions=s.positions[perm])
    out = evaluate(ff, [permuted], [dataset_id])
    np.testing.assert_allclose(out[K.ENERGY], ref[K.ENERGY], atol=atol, rtol=1e-10,
                               err_msg="energy changed under atom permutation")
    np.testing.assert_allclose(out[K.FORCES], ref[K.FORCES][perm], atol=atol,
                               err_msg="forces do not follow the atom permutation")


def assert_supercell_extensive(ff, s: Structure, reps=(2, 2, 2), atol: float = 1e-7,
                               dataset_id: int = 0) -> None:
    """A supercell has n× the energy and the same per-atom forces (and the same stress)."""
    if not s.pbc.all():
        raise ValueError("supercell test needs a structure periodic in 3D")
    shifts = np.array([(i, j, k) for i in range(reps[0]) for j in range(reps[1])
                       for k in range(reps[2])], dtype=np.float64)
    offsets = shifts @ s.cell  # (m, 3)
    big = _with(s, numbers=np.tile(s.numbers, len(shifts)),
                positions=(s.positions[None] + offsets[:, None]).reshape(-1, 3),
                cell=s.cell * np.asarray(reps, dtype=np.float64)[:, None])
    small = evaluate(ff, [s], [dataset_id], stress=True)
    large = evaluate(ff, [big], [dataset_id], stress=True)
    m = len(shifts)
    np.testing.assert_allclose(large[K.ENERGY][0], m * small[K.ENERGY][0], atol=atol * m,
                               rtol=1e-10, err_msg=f"supercell energy is not {m}x the cell's")
    np.testing.assert_allclose(large[K.FORCES], np.tile(small[K.FORCES], (m, 1)), atol=atol,
                               err_msg="supercell forces differ from the cell's")
    np.testing.assert_allclose(large[K.STRESS], small[K.STRESS], atol=atol,
                               err_msg="supercell stress differs from the cell's")


def assert_batch_consistent(ff, structures: list[Structure], dataset_ids: list[int],
                            atol: float = 1e-9) -> None:
    """Each structure alone gives the same energy, forces and stress as inside a mixed batch."""
    together = evaluate(ff, structures, dataset_ids, stress=True)
    start = 0
    for k, (s, d) in enumerate(zip(structures, dataset_ids, strict=True)):
        alone = evaluate(ff, [s], [d], stress=True)
        np.testing.assert_allclose(together[K.ENERGY][k], alone[K.ENERGY][0], atol=atol,
                                   rtol=1e-12, err_msg=f"structure {k}: energy depends on batch")
        np.testing.assert_allclose(together[K.FORCES][start:start + s.n_atoms], alone[K.FORCES],
                                   atol=atol, err_msg=f"structure {k}: forces depend on batch")
        np.testing.assert_allclose(together[K.STRESS][k], alone[K.STRESS][0], atol=atol,
                                   err_msg=f"structure {k}: stress depends on batch")
        start += s.n_atoms


def assert_heads_isolated(ff, structures: list[Structure], dataset_ids: list[int]) -> None:
    """Perturbing one head changes only its own dataset's predictions, in train and eval mode."""
    heads = list(ff.heads.values())
    was_training = ff.training
    for mode in (False, True):
        ff.train(mode)
        before = evaluate(ff, structures, dataset_ids)[K.ENERGY]
        for k, head in enumerate(heads):
            saved = [p.detach().clone() for p in head.parameters()]
            with torch.no_grad():
                for p in head.parameters():
                    p.add_(0.5)
            after = evaluate(ff, structures, dataset_ids)[K.ENERGY]
            with torch.no_grad():
                for p, old in zip(head.parameters(), saved, strict=True):
                    p.copy_(old)
            own = np.asarray(dataset_ids) == k
            assert np.all(after[~own] == before[~own]), (
                f"head {k} changed predictions of other datasets (train={mode})")
            assert np.all(after[own] != before[own]), f"head {k} does not act on its own data"
    ff.train(was_training)


def assert_continuous_at_cutoff(ff, delta: float = 1e-4, e_tol: float = 1e-6,
                                f_tol: float = 1e-3, dataset_id: int = 0) -> None:
    """Energy and forces continuous as a neighbour crosses the cutoff r_c.

    Three atoms on a line: A at 0, B at +d, C at −x with x = r_c − d ± delta, so C stays bonded
    to A (the isolation gate stays on) while the C–B pair crosses r_c. Moving C also stretches
    A–C, a smooth change, so the energy step is compared with the work of the mean force over
    the move: |E₊ − E₋ + F̄·Δx| < ``e_tol`` eV (a jump at the cutoff shows up whole, the smooth
    part cancels to O(delta²)); every force component must change by < ``f_tol`` eV/Å.
    """
    r_c = float(ff.cutoff)
    d = min(2.2, 0.55 * r_c)
    out, pos = [], []
    for sign in (-1, 1):
        x = r_c - d + sign * delta
        p = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [-x, 0.0, 0.0]])
        out.append(evaluate(ff, [Structure([6, 8, 1], p)], [dataset_id]))
        pos.append(p)
    mean_force = 0.5 * (out[0][K.FORCES] + out[1][K.FORCES])
    work = float(np.sum(mean_force * (pos[1] - pos[0])))
    jump = abs(out[1][K.ENERGY][0] - out[0][K.ENERGY][0] + work)  # ΔE = −∫F·dr
    df = np.abs(out[1][K.FORCES] - out[0][K.FORCES]).max()
    assert jump < e_tol, (f"energy jumps by {jump:.3g} eV as a neighbour crosses the cutoff "
                          f"({r_c} Å ± {delta} Å)")
    assert df < f_tol, (f"forces jump by {df:.3g} eV/Å as a neighbour crosses the cutoff "
                        f"({r_c} Å ± {delta} Å)")


def precision_errors(ff, structures: list[Structure], dataset_ids: list[int]) -> dict[str, float]:
    """Largest |E − E_fp64| per atom (eV/atom) and |F − F_fp64| (eV/Å) of the same weights in
    fp32 and under bf16 autocast, against fp64. ``ff`` is left in fp64."""
    from atomgfm.precision import autocast

    ff = ff.double()
    n = np.array([s.n_atoms for s in structures], dtype=np.float64)
    ref = evaluate(ff, structures, dataset_ids)
    errors = {}
    for precision in ("fp32", "bf16"):
        ff.float()
        graphs = [structure_to_graph(s, ff.cutoff, d, ff.backbone.needs)
                  for s, d in zip(structures, dataset_ids, strict=True)]
        batch = collate(graphs, torch.float32)
        with autocast(precision, torch.device("cpu")):
            out = ff(batch, forces=True)
        e = out[K.ENERGY].detach().double().numpy()
        f = out[K.FORCES].detach().double().numpy()
        errors[f"{precision}_energy_eV_atom"] = float(np.max(np.abs(e - ref[K.ENERGY]) / n))
        errors[f"{precision}_forces_eV_A"] = float(np.max(np.abs(f - ref[K.FORCES])))
    ff.double()
    return errors


def assert_features_equivariant(ff, s: Structure, seed: int = 4, atol: float = 1e-10) -> None:
    """The backbone's NODE_SCALARS are invariant and its NODE_VECTORS (when it has them) rotate
    with the structure, under a rotation and under a rotation with a reflection."""
    rot = Rotation.random(random_state=seed).as_matrix()
    needs = ff.backbone.needs
    for r in (rot, rot @ np.diag([1.0, 1.0, -1.0])):
        turned = _with(s, positions=s.positions @ r.T, cell=s.cell @ r.T)
        with torch.no_grad():
            a, b = (ff.backbone(collate([structure_to_graph(x, ff.cutoff, 0, needs)],
                                        torch.float64)) for x in (s, turned))
        np.testing.assert_allclose(b[K.NODE_SCALARS].numpy(), a[K.NODE_SCALARS].numpy(),
                                   atol=atol, err_msg="scalar features change under rotation")
        if K.NODE_VECTORS in a:
            va = a[K.NODE_VECTORS].numpy()
            assert np.abs(va).max() > 1e-6, "vector features are all zero"
            np.testing.assert_allclose(b[K.NODE_VECTORS].numpy(),
                                       np.einsum("ab,nbc->nac", r, va), atol=atol,
                                       err_msg="vector features do not rotate with the structure")


def assert_no_unused_parameters(ff, s: Structure) -> None:
    """Every trainable backbone parameter receives a gradient from an energy + force loss (DDP
    then needs no unused-parameter search)."""
    ff.zero_grad(set_to_none=True)
    batch = collate([structure_to_graph(s, ff.cutoff, 0, ff.backbone.needs)], torch.float64)
    out = ff(batch, forces=True, create_graph=True)
    (out[K.ENERGY].sum() + out[K.FORCES].square().sum()).backward()
    missing = [n for n, p in ff.backbone.named_parameters() if p.requires_grad and p.grad is None]
    ff.zero_grad(set_to_none=True)
    assert not missing, f"parameters without a gradient: {missing}"


def assert_fp32_matches_fp64(ff, structures: list[Structure], rtol: float = 1e-5,
                             force_atol: float | None = None) -> None:
    """The same weights in fp32 give the fp64 energies to ``rtol`` (and forces to
    ``force_atol`` eV/Å when given). ``ff`` is left in fp64."""
    ref = evaluate(ff.double(), structures)
    ff32 = ff.float()
    batch = collate([structure_to_graph(s, ff32.cutoff, 0, ff32.backbone.needs)
                     for s in structures], torch.float32)
    out = ff32(batch, forces=force_atol is not None)
    np.testing.assert_allclose(out[K.ENERGY].detach().double().numpy(), ref[K.ENERGY],
                               rtol=rtol, err_msg="fp32 energies differ from fp64")
    if force_atol is not None:
        np.testing.assert_allclose(out[K.FORCES].detach().double().numpy(), ref[K.FORCES],
                                   atol=force_atol, err_msg="fp32 forces differ from fp64")
    ff.double()
