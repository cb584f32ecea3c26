from __future__ import annotations

import numpy as np
import pytest

from atomgfm.data.mixing import (
    MixedBatchSampler,
    epoch_counts,
    mixing_probabilities,
    oversampling,
    packed_batches,
)

SIZES = {"big": 900, "mid": 90, "small": 10}


def test_strategies():
    p = mixing_probabilities(SIZES, "proportional")
    assert p == pytest.approx({"big": 0.9, "mid": 0.09, "small": 0.01})
    assert mixing_probabilities(SIZES, "balanced") == pytest.approx(dict.fromkeys(SIZES, 1 / 3))
    t = mixing_probabilities(SIZES, "temperature", temperature=2.0)
    w = np.sqrt([900, 90, 10])
    assert list(t.values()) == pytest.approx(list(w / w.sum()))
    e = mixing_probabilities(SIZES, "explicit", ratios={"big": 1, "mid": 1, "small": 2})
    assert e["small"] == pytest.approx(0.5)


def test_oversampling_ratio_is_exact():
    p = mixing_probabilities(SIZES, "balanced")
    over = oversampling(SIZES, p)
    assert over["small"] == pytest.approx((1 / 3) / 0.01)
    assert over["big"] == pytest.approx((1 / 3) / 0.9)


def test_bad_mixing_inputs_are_errors():
    with pytest.raises(ValueError, match="unknown mixing strategy"):
        mixing_probabilities(SIZES, "random")
    with pytest.raises(ValueError, match="explicit mixing needs a ratio"):
        mixing_probabilities(SIZES, "explicit", ratios={"big": 1})
    with pytest.raises(ValueError, match="at least one structure"):
        mixing_probabilities({"a": 0}, "balanced")


def test_sampler_draws_each_dataset_exactly_its_share_per_epoch():
    sizes = [np.full(900, 4), np.full(10, 4)]  # 910 draws per epoch, half from the small set
    sampler = MixedBatchSampler(sizes, [0.5, 0.5], max_atoms=40, max_structures=10, seed=1)
    drawn = []
    while len(drawn) < 910:
        drawn += sampler.next_batch()
    counts = np.bincount([d for d, _ in drawn[:910]], minlength=2)
    assert counts.tolist() == [455, 455]
    small = sorted(i for d, i in drawn[:910] if d == 1)  # 45.5 passes over 10 records
    assert sorted(np.bincount(small).tolist()) == [45] * 5 + [46] * 5


def test_epoch_counts_round_to_the_epoch_length():
    counts = epoch_counts([900, 10, 3], np.array([0.6, 0.399, 0.001]), 913)
    assert counts.sum() == 913 and counts.tolist() == [548, 364, 1]


def test_ranks_split_each_epoch_without_overlap():
    sizes = [np.full(30, 2), np.full(7, 3)]
    probs = [0.6, 0.4]
    full = MixedBatchSampler(sizes, probs, max_atoms=6, max_structures=3, seed=5)
    epoch = [tuple(x) for x in full.epoch_items(0).tolist()]
    shares = []
    for rank in range(3):
        s = MixedBatchSampler(sizes, probs, max_atoms=6, max_structures=3, seed=5, rank=rank,
                              world_size=3)
        got = []
        while s.epoch == 0:
            got += s.next_batch()
        shares.append(got[: len(range(rank, len(epoch), 3))])
    for rank, share in enumerate(shares):
        assert share == epoch[rank::3]  # each rank's draws, in order, with no overlap
    assert sorted(x for sh in shares for x in sh) == sorted(epoch)


def test_sampler_state_is_seed_epoch_and_cursor():
    s = MixedBatchSampler([np.full(1000, 5)], [1.0], max_atoms=50, max_structures=10, seed=2)
    for _ in range(150):
        s.next_batch()
    assert s.state_dict() == {"seed": 2, "epoch": 1, "cursor": 500, "rank": 0, "world_size": 1,
                              "epoch_length": 1000}


def test_resume_with_another_world_size_is_refused():
    a = MixedBatchSampler([np.full(10, 1)], [1.0], seed=0, rank=0, world_size=2)
    b = MixedBatchSampler([np.full(10, 1)], [1.0], seed=0)
    with pytest.raises(ValueError, match=r"written by 2 rank\(s\).*this run has 1 rank"):
        b.load_state_dict(a.state_dict())


def test_sampler_visits_every_record_before_repeating():
    sizes = [np.full(7, 3)]
    sampler = MixedBatchSampler(sizes, [1.0], max_atoms=9, max_structures=10, seed=0)
    seen = [i for _ in range(7) for _, i in sampler.next_batch()][:7]
    assert sorted(seen) == list(range(7))


def test_batches_are_packed_to_max_atoms():
    rng = np.random.default_rng(0)
    sizes = [rng.integers(1, 30, 200)]
    sampler = MixedBatchSampler(sizes, [1.0], max_atoms=64, max_structures=100, seed=0)
    for _ in range(50):
        batch = sampler.next_batch()
        total = sum(int(sizes[0][i]) for _, i in batch)
        assert total <= 64 or len(batch) == 1


def test_oversized_structure_forms_its_own_batch():
    sampler = MixedBatchSampler([np.array([500])], [1.0], max_atoms=64, max_structures=8)
    assert sampler.next_batch() == [(0, 0)]


def test_sampler_state_round_trip_gives_the_same_stream():
    sizes = [np.arange(1, 50), np.arange(1, 20)]
    a = MixedBatchSampler(sizes, [0.7, 0.3], max_atoms=60, max_structures=9, seed=3)
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(10)]
    b = MixedBatchSampler(sizes, [0.7, 0.3], max_atoms=60, max_structures=9, seed=99)
    b.load_state_dict(state)
    assert [b.next_batch() for _ in range(10)] == expected


def test_packed_batches_keep_order_and_limits():
    batches = packed_batches(np.array([5, 5, 5, 20, 1]), max_atoms=12, max_structures=2)
    assert batches == [[0, 1], [2], [3], [4]]


def test_packed_batches_also_respect_an_edge_limit():
    sizes, edges = np.array([10, 10, 10, 10]), np.array([500, 500, 50, 50])
    assert packed_batches(sizes, 100, 10, edges, max_edges=600) == [[0], [1, 2, 3]]
    assert packed_batches(sizes, 100, 10) == [[0, 1, 2, 3]]


def test_a_single_dataset_epoch_is_a_uniform_shuffle():
    """Each epoch's order comes from its own stream: with 3 records all 6 orders occur, each
    about equally often over 600 epochs (the dataset's permutation and the interleaving must not
    share a random stream, which would make the order a permutation squared)."""
    s = MixedBatchSampler([np.full(3, 1)], [1.0], seed=4)
    orders = [tuple(s.epoch_items(e)[:, 1].tolist()) for e in range(600)]
    counts = {o: orders.count(o) for o in set(orders)}
    assert len(counts) == 6
    assert min(counts.values()) > 60 and max(counts.values()) < 140  # expected 100 each


def test_a_dataset_with_probability_zero_is_never_drawn():
    s = MixedBatchSampler([np.full(5, 1), np.full(5, 1)], [1.0, 0.0], max_atoms=3, seed=0)
    items = s.epoch_items(0)
    assert len(items) == 10 and set(items[:, 0].tolist()) == {0}


def test_batches_also_close_at_the_edge_limit():
    atoms = [np.full(40, 4)]
    edges = [np.full(40, 30)]  # dense cells: 30 edges each
    s = MixedBatchSampler(atoms, [1.0], max_atoms=1000, max_structures=100, seed=0,
                          edges_per_structure=edges, max_edges=100)
    assert [len(s.next_batch()) for _ in range(3)] == [3, 3, 3]  # 90 edges each, not 120
    with pytest.raises(ValueError, match="max_edges needs edges_per_structure"):
        MixedBatchSampler(atoms, [1.0], max_edges=100)
