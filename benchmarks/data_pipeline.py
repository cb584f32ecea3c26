"""Data pipeline: preprocessing into a store, the loader against the training step, memory.

    .venv/bin/python benchmarks/data_pipeline.py                      # demo corpus ×4
    .venv/bin/python benchmarks/data_pipeline.py --repeat 1 --batches 40 --train-steps 10  # small

Needs the demo corpus (``atomgfm data demo --out demo_data``). The corpus is replicated by
listing each dataset's file ``--repeat`` times (the same records again: real labels, more bytes).
Printed, one section each:

1. preprocess: structures/s into a store (neighbour lists stored) with 1 and 2 worker processes
   (reading stays in the main process; workers build graphs and write shards), and with 1 worker
   without stored neighbour lists;
2. loader: structures/s from the store into collated batches (the demo config's batch limits,
   ``MixedBatchSampler`` draws, so random access across shards) with 0, 1 and 2 DataLoader
   workers, for stored neighbour lists and for lists built when read; beside the training step's
   consumption (structures/s of ``Trainer.train_step`` on the demo model, fp32, data already in
   memory) and the ratio loader / step (target >= 5);
3. memory: every record of the store read once in order through the loader (2 workers,
   ``--max-open-shards`` open shards per process, prefetch 2), with the resident set size of the
   main process plus its workers sampled every 50 ms: the loader's budget (open shards' bytes +
   prefetched batches, per process), the store size, and RSS at 10 %, 50 % and 100 % of the
   records and its peak.

Timings on a shared machine are disturbed by other jobs: quote ``uptime`` with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rss_tree_mb(pid: int) -> float:
    """Resident set size (MiB) of ``pid`` and its child processes, from /proc."""
    total = 0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class RssSampler(threading.Thread):
    def __init__(self, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(rss_tree_mb(os.getpid()))
            time.sleep(self.every)


def data_config(repeat: int):
    from atomgfm.config.schema import load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    cfg.data.datasets = [dataclasses.replace(d, path=[d.path] * repeat) for d in cfg.data.datasets]
    return cfg


def bench_preprocess(cfg, cutoff, tmp: Path, workers: int, edges: bool, shard_size: int):
    from atomgfm.data.store.manifest import Store
    from atomgfm.data.store.writer import preprocess

    out = tmp / f"store-w{workers}-{'edges' if edges else 'noedges'}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    preprocess(cfg.data, cutoff, out, workers=workers, shard_size=shard_size, edges=edges,
               progress=False)
    dt = time.perf_counter() - t
    n = Store.open(out).manifest["n_entries"]
    print(f"  workers {workers}  neighbour lists {'stored' if edges else 'not stored':<11}"
          f"  {n} structures in {dt:6.1f} s  {n / dt:8.1f} structures/s")
    return out


def loader_rate(cfg, cutoff, store: Path, workers: int, batches: int) -> float:
    from atomgfm.data.mixing import MixedBatchSampler
    from atomgfm.data.sources import prepare_data
    from atomgfm.data.store.loader import BatchLoader

    data = prepare_data(dataclasses.replace(cfg.data, store=str(store), datasets=[]), cutoff,
                        progress=False)
    sampler = MixedBatchSampler([g.n_atoms for g in data.train], [1.0] * len(data.train),
                                cfg.data.max_atoms_per_batch, cfg.data.max_structures_per_batch,
                                seed=1)
    loader = BatchLoader(sampler, data.train, torch.float32, "cpu", workers, 2)
    for _ in range(3):  # workers started, first shards open
        loader.next()
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        items, _batch = loader.next()
        n += len(items)
    dt = time.perf_counter() - t
    loader.reset()
    return n / dt


def train_rate(cfg, steps: int) -> float:
    from atomgfm.train.loop import Trainer

    cfg.train.progress = False
    cfg.train.out_dir = tempfile.mkdtemp()
    trainer = Trainer.from_config(cfg, resume=False)
    for _ in range(3):
        trainer.train_step()
    n, t = 0, time.perf_counter()
    for _ in range(steps):
        n += trainer.train_step()["structures"]
    return n / (time.perf_counter() - t)


def bench_memory(cfg, cutoff, store: Path, max_open: int, workers: int) -> None:
    from atomgfm.data.graph import collate
    from atomgfm.data.mixing import packed_batches
    from atomgfm.data.sources import prepare_data
    from atomgfm.data.store.manifest import Store
    from atomgfm.data.store.source import ShardCache

    data = prepare_data(dataclasses.replace(cfg.data, store=str(store), datasets=[]), cutoff,
                        progress=False)
    st = Store.open(store)
    for src in data.train:
        src.cache = ShardCache(st, None, max_open)
    shard_bytes = [sum(f.stat().st_size for f in st.shard_path(s["name"]).iterdir())
                   for s in st.shards]
    store_mb = sum(shard_bytes) / 2**20

    class InOrder(torch.utils.data.Dataset):  # every training record once, in store order
        def __init__(self):
            self.batches = [(d, b) for d, src in enumerate(data.train)
                            for b in packed_batches(src.n_atoms, cfg.data.max_atoms_per_batch,
                                                    cfg.data.max_structures_per_batch)]

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, k):
            d, idx = self.batches[k]
            return len(idx), collate([data.train[d][i] for i in idx])

    ds = InOrder()
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                         prefetch_factor=2)
    batch_mb = max(sum(v.numel() * v.element_size() for v in collate(
        [data.train[d][i] for i in idx]).values()) for d, idx in ds.batches[:50]) / 2**20
    budget = (max_open * max(shard_bytes) / 2**20) * (workers + 1) + workers * 2 * batch_mb
    sampler = RssSampler()
    start = rss_tree_mb(os.getpid())
    sampler.start()
    marks, n, total = {}, 0, sum(len(src) for src in data.train)
    for k, _batch in loader:
        n += k
        for frac in (0.1, 0.5, 1.0):
            if frac not in marks and n >= frac * total:
                marks[frac] = rss_tree_mb(os.getpid())
    sampler.stop.set()
    sampler.join()
    print(f"  store {store_mb:.1f} MiB ({len(st.shards)} shards); loader budget {budget:.1f} MiB "
          f"({max_open} open shards x {max(shard_bytes) / 2**20:.2f} MiB x {workers + 1} "
          f"processes + {workers}x2 prefetched batches of <= {batch_mb:.2f} MiB): store / "
          f"budget = {store_mb / budget:.1f}")
    print(f"  {n} records streamed with {workers} workers; RSS (main + workers) before "
          f"{start:.0f} MiB, at 10% {marks[0.1]:.0f}, 50% {marks[0.5]:.0f}, 100% "
          f"{marks[1.0]:.0f}, peak {max(sampler.samples):.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=4, help="list each demo file this many times")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=100, help="timed loader batches per row")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--max-open-shards", type=int, default=2)
    p.add_argument("--memory-repeat", type=int, default=None,
                   help="repeat for the memory store (default: --repeat)")
    p.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() // 2))
    from atomgfm.models.build import backbone_settings

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="atomgfm-bench-"))
    cfg = data_config(args.repeat)
    cutoff = backbone_settings(cfg.model).cutoff
    print(f"demo corpus x{args.repeat}, cutoff {cutoff} Å, shard size {args.shard_size}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("1. preprocess")
    stores = {}
    for workers, edges in ((1, True), (2, True), (1, False)):
        stores[(workers, edges)] = bench_preprocess(cfg, cutoff, tmp, workers, edges,
                                                    args.shard_size)
    print("2. loader vs training step (demo batch limits: max "
          f"{cfg.data.max_atoms_per_batch} atoms, {cfg.data.max_structures_per_batch} "
          "structures)")
    step = train_rate(data_config(1), args.train_steps)
    print(f"  training step (demo PaiNN, fp32, data in memory): {step:8.1f} structures/s")
    for edges in (True, False):
        for workers in (0, 1, 2):
            rate = loader_rate(cfg, cutoff, stores[(1, edges)], workers, args.batches)
            print(f"  loader  workers {workers}  neighbour lists "
                  f"{'stored' if edges else 'built on read':<14} {rate:8.1f} structures/s  "
                  f"= {rate / step:5.1f}x the step")
    print("3. memory while streaming the whole store")
    mem_store = stores[(1, True)]
    if args.memory_repeat and args.memory_repeat != args.repeat:
        mem_store = bench_preprocess(data_config(args.memory_repeat), cutoff, tmp / "mem", 2,
                                     True, args.shard_size)
    bench_memory(cfg, cutoff, mem_store, args.max_open_shards, 2)
    if args.tmp is None:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
