"""``atomgfm data demo --out demo_data``: generate the demo corpus with real calculators."""

from __future__ import annotations

HELP = "datasets: generate the demo corpus"
ORDER = 10


def add_arguments(p) -> None:
    p.add_argument("what", choices=["demo"])
    p.add_argument("--out", default="demo_data", help="output folder (default demo_data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply dataset sizes")


def run(args) -> int:
    if args.what == "demo":
        from atomgfm.demo.corpus import generate_demo

        specs = generate_demo(args.out, seed=args.seed, scale=args.scale)
        for s in specs:
            print(f"  {s['name']:<12} {s['n_structures']:>6} structures  {s['level_of_theory']}")
        print(f"demo corpus written to {args.out}")
    return 0
