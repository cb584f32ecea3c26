"""``atomgfm router fit CHECKPOINT [--data FOLDER|CONFIG.yaml]``: train the screening router.

The router maps a structure's composition (element fractions over the model's training elements,
plus total charge, unpaired electrons and periodicity) to a softmax over the checkpoint's heads,
trained on which dataset each training structure came from (the training splits the checkpoint's
config defines), scored on the validation splits. It is stored inside the checkpoint (plain
tensors, ``weights_only`` loading still works), or in a copy with ``--out``.

    atomgfm router fit runs/demo/best.pt --data demo_data
"""

from __future__ import annotations

HELP = "fit the composition router that screening blends heads with"
ORDER = 55


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="router_verb", required=True)
    f = sub.add_parser("fit", help="fit the router on the checkpoint's training data",
                       description=__doc__)
    f.add_argument("checkpoint")
    f.add_argument("--data", help="data folder (replaces the config's data.root) or a config "
                   "YAML whose data section lists the datasets (default: the checkpoint's)")
    f.add_argument("--out", help="write a copy with the router here instead of updating "
                   "CHECKPOINT in place")
    f.add_argument("--hidden", type=int, default=32)
    f.add_argument("--epochs", type=int, default=300)
    f.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from pathlib import Path

    from atomgfm.config.schema import config_from_dict, load_config
    from atomgfm.data.sources import load_datasets
    from atomgfm.models.checkpoint import read_checkpoint
    from atomgfm.screen.router import add_router, fit_router

    state = read_checkpoint(args.checkpoint)
    cfg = config_from_dict(state["config"]).data
    if args.data:
        data = Path(args.data)
        if data.is_dir():
            cfg.root = str(data.resolve())
        elif data.is_file():
            cfg = load_config(data).data
        else:
            raise FileNotFoundError(f"--data: no such folder or config file: {data}")
    heads = [d["name"] for d in sorted(state["datasets"], key=lambda d: d["id"])]
    foreign = [d.name for d in cfg.datasets if d.name not in heads]
    if foreign:
        raise ValueError(f"{args.checkpoint}: dataset(s) {foreign} of the data have no head "
                         f"in this checkpoint (heads: {heads})")
    loaded = load_datasets(cfg)
    router, report = fit_router({d.name: d.train for d in loaded}, heads, state["elements"],
                                val={d.name: d.val for d in loaded}, hidden=args.hidden,
                                epochs=args.epochs, seed=args.seed)
    target = add_router(args.checkpoint, router, report, args.out)
    print(f"router ({len(heads)} heads, {router.n_features} features) stored in {target}")
    print(f"held-out accuracy {report.get('val_accuracy', float('nan')):.3f} on "
          f"{report.get('n_val', 0)} structures (chance {report.get('chance', float('nan')):.3f}"
          f"), train accuracy {report['train_accuracy']:.3f} on {report['n_train']}")
    for name, r in report.get("per_head", {}).items():
        print(f"  {name:<16} {r['accuracy']:.3f}  (n={r['n']})")
    return 0
