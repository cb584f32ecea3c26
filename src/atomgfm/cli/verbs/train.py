"""``atomgfm train CONFIG.yaml``: train a multi-task model (resumes from out_dir/last.pt).

Under ``torchrun`` (its RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment) every
worker joins the process group (NCCL on GPU, gloo on CPU) and trains its share; no flag needed:

    torchrun --standalone --nproc-per-node 4 -m atomgfm.cli.main train configs/demo.yaml
"""

from __future__ import annotations

HELP = "train a multi-task model from a YAML config"
ORDER = 20


def add_arguments(p) -> None:
    p.add_argument("config")
    add_run_arguments(p)


def add_run_arguments(p) -> None:
    """The options of a training run (``train``, ``finetune``): where, how long, resume or not."""
    p.add_argument("--out-dir", help="override train.out_dir")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--restart", action="store_true", help="ignore out_dir/last.pt, start over")


def apply_run_arguments(cfg, args) -> None:
    """``--out-dir`` and ``--max-steps``, where given, into ``cfg.train`` (``--restart`` is the
    caller's ``resume=not args.restart``)."""
    if args.out_dir:
        cfg.train.out_dir = args.out_dir
    if args.max_steps:
        cfg.train.max_steps = args.max_steps


def run(args) -> int:
    from atomgfm.config.schema import load_config
    from atomgfm.inference.evaluate import metrics_table
    from atomgfm.train.distributed import init_distributed, launch_env, leaving_process_group
    from atomgfm.train.loop import Trainer

    cfg = load_config(args.config)
    apply_run_arguments(cfg, args)
    env = launch_env()  # None unless started by torchrun
    if env is None:
        trainer = Trainer.from_config(cfg, resume=not args.restart)
        metrics = trainer.fit()
    else:
        import logging

        # "cuda" is this rank's cuda:LOCAL_RANK (made current); the saved config stays portable
        cfg.train.device = init_distributed(env, cfg.train.device).type
        if env.rank != 0:  # rank 0 alone prints; the others still show warnings and errors
            logging.getLogger("atomgfm").setLevel(logging.WARNING)
            cfg.train.progress = False
        # the Trainer's DDP reducer keeps the (then idle) group until the Trainer is freed
        with leaving_process_group():
            trainer = Trainer.from_config(cfg, resume=not args.restart, rank=env.rank,
                                          world_size=env.world_size)
            metrics = trainer.fit()
        if env.rank != 0:
            return 0
        print(f"{env.world_size} ranks ({cfg.train.device} on rank 0), "
              f"grad_sync {cfg.train.grad_sync}")
    print(f"validation at the last step ({trainer.step}), EMA weights:")
    print(metrics_table(trainer.datasets, metrics, table=trainer.table,
                        sources=trainer.val_sets))
    print(f"checkpoints in {cfg.train.out_dir}: best.pt, last.pt; training curves: curves.png")
    return 0
