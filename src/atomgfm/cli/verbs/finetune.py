"""``atomgfm finetune CONFIG.yaml``: fine-tune a pretrained checkpoint on new datasets."""

from __future__ import annotations

from atomgfm.cli.verbs.train import add_run_arguments, apply_run_arguments

HELP = "fine-tune a pretrained checkpoint on new datasets (scratch | frozen | full)"
ORDER = 25


def add_arguments(p) -> None:
    p.add_argument("config", help="YAML with finetune:, data: and train: sections")
    p.add_argument("--checkpoint", help="override finetune.checkpoint")
    p.add_argument("--regime", choices=["scratch", "frozen", "full"],
                   help="override finetune.regime")
    add_run_arguments(p)


def run(args) -> int:
    from atomgfm.finetune import finetune, load_finetune_config

    cfg = load_finetune_config(args.config)
    if args.checkpoint:
        cfg.finetune.checkpoint = args.checkpoint
    if args.regime:
        cfg.finetune.regime = args.regime
    apply_run_arguments(cfg, args)
    result = finetune(cfg, resume=not args.restart)
    for name, init in result.head_init.items():
        print(f"head {name}: initialised from {init['from']}")
    print(f"validation (regime {cfg.finetune.regime}), start → end:")
    print(result.table)
    if result.forgetting_table:
        print("forgetting (pretraining heads, their validation split):")
        print(result.forgetting_table)
    for note in result.notes:
        print(f"note: {note}")
    print(f"fine-tuned model (every head): {result.checkpoint}")
    return 0
