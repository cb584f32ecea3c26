"""``atomgfm data``: datasets and stores.

    atomgfm data demo --out demo_data                    # the demo corpus (real calculators)
    atomgfm data preprocess configs/demo.yaml --out store --workers 2
    atomgfm data info store                              # datasets, sizes, splits, elements
    atomgfm data verify store                            # every shard against its hash

``preprocess`` takes a training config (its ``data:`` section and the backbone's cutoff) or a
YAML holding only a data section plus ``cutoff:``; it resumes an interrupted conversion of the same
spec into the same ``--out``. Train from the store with ``data: {store: store}``.
"""

from __future__ import annotations

HELP = "datasets: demo corpus, preprocess into a store, store info"
ORDER = 10


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("demo", help="generate the demo corpus")
    d.add_argument("--out", default="demo_data", help="output folder (default demo_data)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scale", type=float, default=1.0, help="multiply dataset sizes")
    pre = sub.add_parser("preprocess", help="datasets of a config -> a sharded ADIOS2 store")
    pre.add_argument("spec", help="training config (or data section + cutoff) YAML")
    pre.add_argument("--out", required=True, help="store folder (resumed if it exists)")
    pre.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    pre.add_argument("--shard-size", type=int, default=2048, help="records per shard")
    pre.add_argument("--cutoff", type=float, help="graph cutoff in Å (default: the model's)")
    pre.add_argument("--no-edges", action="store_true",
                     help="do not store neighbour lists (build them when read)")
    info = sub.add_parser("info", help="datasets, sizes, splits, elements, labels of a store")
    info.add_argument("store")
    ver = sub.add_parser("verify", help="check every shard of a store against its hash")
    ver.add_argument("store")


def _spec(path: str, cutoff: float | None):
    """(data config, cutoff) from a training config or a ``{data:, cutoff:}`` file."""
    from pathlib import Path

    from atomgfm.config.schema import ConfigError, config_from_dict, load_config, read_yaml
    from atomgfm.models.build import backbone_settings

    raw = read_yaml(path)
    if isinstance(raw, dict) and "cutoff" in raw and "model" not in raw:
        given = raw.pop("cutoff")
        if not isinstance(given, int | float) or isinstance(given, bool) or given <= 0:
            raise ConfigError(f"{path}: cutoff must be a positive number of Å, got {given!r}")
        data = raw.setdefault("data", {})
        root = Path(data.get("root", "."))
        data["root"] = str(root if root.is_absolute() else (Path(path).parent / root).resolve())
        try:
            cfg = config_from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cfg.data, float(cutoff or given)
    cfg = load_config(path)
    return cfg.data, float(cutoff or backbone_settings(cfg.model).cutoff)


def run(args) -> int:
    if args.what == "demo":
        from atomgfm.demo.corpus import generate_demo

        specs = generate_demo(args.out, seed=args.seed, scale=args.scale)
        for s in specs:
            print(f"  {s['name']:<12} {s['n_structures']:>6} structures  {s['level_of_theory']}")
        print(f"demo corpus written to {args.out}")
    elif args.what == "preprocess":
        from atomgfm.data.store.manifest import Store, describe
        from atomgfm.data.store.writer import preprocess

        data, cutoff = _spec(args.spec, args.cutoff)
        out = preprocess(data, cutoff, args.out, workers=args.workers,
                         shard_size=args.shard_size, edges=not args.no_edges)
        print(describe(Store.open(out)))
    elif args.what == "info":
        from atomgfm.data.store.manifest import Store, describe

        print(describe(Store.open(args.store)))
    elif args.what == "verify":
        from atomgfm.data.store.manifest import Store

        store = Store.open(args.store)
        store.verify(progress=True)
        print(f"{store.root}: all {len(store.shards)} shards match their hashes")
    return 0
