"""``atomgfm train CONFIG.yaml``: train a multi-task model (resumes from out_dir/last.pt)."""

from __future__ import annotations

HELP = "train a multi-task model from a YAML config"
ORDER = 20


def add_arguments(p) -> None:
    p.add_argument("config")
    p.add_argument("--out-dir", help="override train.out_dir")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--restart", action="store_true", help="ignore out_dir/last.pt, start over")


def run(args) -> int:
    from atomgfm.config.schema import load_config
    from atomgfm.inference.evaluate import metrics_table
    from atomgfm.train.loop import Trainer

    cfg = load_config(args.config)
    if args.out_dir:
        cfg.train.out_dir = args.out_dir
    if args.max_steps:
        cfg.train.max_steps = args.max_steps
    trainer = Trainer.from_config(cfg, resume=not args.restart)
    metrics = trainer.fit()
    print(f"validation at the last step ({trainer.step}), EMA weights:")
    print(metrics_table(trainer.datasets, metrics, table=trainer.table,
                        sources=trainer.val_sets))
    print(f"checkpoints in {cfg.train.out_dir}: best.pt, last.pt; training curves: curves.png")
    return 0
