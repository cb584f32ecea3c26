"""``atomgfm finetune CONFIG.yaml``: fine-tune a pretrained checkpoint on new datasets."""

from __future__ import annotations

HELP = "fine-tune a pretrained checkpoint on new datasets (scratch | frozen | full)"
ORDER = 25


def add_arguments(p) -> None:
    p.add_argument("config", help="YAML with finetune:, data: and train: sections")
    p.add_argument("--checkpoint", help="override finetune.checkpoint")
    p.add_argument("--regime", choices=["scratch", "frozen", "full"],
                   help="override finetune.regime")
    p.add_argument("--out-dir", help="override train.out_dir")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--restart", action="store_true", help="ignore out_dir/last.pt, start over")


def run(args) -> int:
    from atomgfm.finetune import finetune, load_finetune_config

    cfg = load_finetune_config(args.config)
    if args.checkpoint:
        cfg.finetune.checkpoint = args.checkpoint
    if args.regime:
        cfg.finetune.regime = args.regime
    if args.out_dir:
        cfg.train.out_dir = args.out_dir
    if args.max_steps:
        cfg.train.max_steps = args.max_steps
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
