"""Two ranks on CPU (gloo): the Trainer's rank, world size and reduce seams, for real.

Each rank draws its own share of the epoch; gradients are averaged through the reduce function,
so after a step both ranks hold the same weights, equal to one AdamW step on the mean of the two
ranks' batch gradients; the checkpoint records both ranks' sampler positions.
"""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from atomgfm.config.schema import config_from_dict
from atomgfm.data.graph import collate
from atomgfm.models.checkpoint import read_checkpoint
from atomgfm.testing.fixtures import tiny_datasets
from atomgfm.train.distributed import leaving_process_group
from atomgfm.train.loop import Trainer
from atomgfm.train.losses import multitask_loss


def _cfg(out_dir, steps):
    return config_from_dict({
        "model": {"preset": "S", "backbone_kwargs": {"cutoff": 4.0}},
        "data": {"max_atoms_per_batch": 24},
        "train": {"out_dir": str(out_dir), "max_steps": steps, "eval_every": steps,
                  "log_every": 1, "progress": False, "precision": "fp64", "ema_decay": None,
                  "warmup_steps": 0, "grad_clip": 1e9}})


def _rank(rank: int, world: int, init_file: str, out_dir: str, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=180))
    with leaving_process_group():
        trainer = Trainer.from_config(_cfg(out_dir, steps), tiny_datasets(n_bulk=8, n_clusters=6),
                                      rank=rank, world_size=world)
        trainer.fit()
        torch.save(trainer.model.state_dict(), f"{out_dir}/rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank, args=(2, str(out / "init"), str(out), 1), nprocs=2, join=True)
    return out


def test_two_ranks_take_the_same_step_on_their_mean_gradient(two_ranks):
    w0 = torch.load(two_ranks / "rank0.pt")
    w1 = torch.load(two_ranks / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"{k} differs between ranks"

    # Recompute in one process: each rank's first batch, the mean gradient, one Adam step.
    single = Trainer.from_config(_cfg(two_ranks / "single", 1),
                                 tiny_datasets(n_bulk=8, n_clusters=6), resume=False)
    params = {k: p for k, p in single.model.named_parameters() if p.requires_grad}
    before = {k: p.detach().clone() for k, p in params.items()}
    mean = {k: torch.zeros_like(p) for k, p in params.items()}
    for rank in (0, 1):
        sampler = type(single.sampler)([g.n_atoms for g in single.train_sets],
                                       single.sampler.probs, 24, 64, seed=0, rank=rank,
                                       world_size=2)
        batch = collate([single.train_sets[d][i] for d, i in sampler.next_batch()],
                        torch.float64)
        out = single.model(batch, forces=True, stress=bool(batch["has_stress"].any()),
                           create_graph=True)
        loss, _ = multitask_loss(out, batch, single.scales, single.weights)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (k, p), g in zip(params.items(), grads, strict=True):
            mean[k] += (g if g is not None else torch.zeros_like(p)) / 2
    lr = single.scheduler.get_last_lr()[0]
    for k in params:
        expected = before[k] - lr * mean[k] / (mean[k].abs() + 1e-8)
        torch.testing.assert_close(w0[f"{k}"], expected, rtol=1e-9, atol=1e-12, msg=k)


def test_the_checkpoint_holds_every_ranks_sampler_position(two_ranks):
    """Both rows, each where that rank's own sampler stands after its one batch."""
    from atomgfm.data.mixing import MixedBatchSampler

    st = read_checkpoint(two_ranks / "last.pt")
    assert st["sampler"]["world_size"] == 2 and st["step"] == 1
    single = Trainer.from_config(_cfg(two_ranks / "single2", 1),
                                 tiny_datasets(n_bulk=8, n_clusters=6), resume=False)
    expected = []
    for rank in (0, 1):
        s = MixedBatchSampler([g.n_atoms for g in single.train_sets], single.sampler.probs, 24,
                              64, seed=0, rank=rank, world_size=2)
        s.next_batch()
        expected.append([s.epoch, s.cursor])
    assert st["sampler"]["ranks"] == expected
    assert expected[0] != [0, 0]
