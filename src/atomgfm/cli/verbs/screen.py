"""``atomgfm screen generate|run|top``: screen millions of candidates with every head at once.

    atomgfm screen generate spec.yaml                    # count candidates (no enumeration)
    atomgfm screen generate spec.yaml --show 5           # and print the first few ids
    atomgfm screen run runs/demo/best.pt --spec spec.yaml --out runs/screen1 [--forces]
    atomgfm screen run runs/demo/best.pt --input structures.extxyz --out runs/screen2
    atomgfm screen top runs/screen1 --k 100 --by relative_energy_per_atom

``run`` encodes each batch once, evaluates all kept heads as one stacked product, blends them by
the checkpoint's router (``atomgfm router fit``; equal weights without one), skips heads below
``--threshold`` and takes forces from one backward of the blend. It writes Parquet chunks and
resumes from them when restarted with the same arguments; under torchrun each rank screens its
own share (RANK / WORLD_SIZE).
"""

from __future__ import annotations

HELP = "generate candidates, screen them with every head, rank the results"
ORDER = 50


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="screen_verb", required=True)
    g = sub.add_parser("generate", help="count (and show) the candidates of a spec")
    g.add_argument("spec", help="generator spec YAML (docs/screening.md)")
    g.add_argument("--show", type=int, default=0, metavar="N", help="print the first N ids")
    g.add_argument("--write", metavar="FILE", help="also write the first --show candidates "
                   "(or all when --show is 0) to an extxyz file")

    r = sub.add_parser("run", help="screen candidates into Parquet chunks (resumable)")
    r.add_argument("checkpoint")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", help="generator spec YAML")
    src.add_argument("--input", help="structure file or folder (any registered reader)")
    r.add_argument("--format", help="reader format for --input")
    r.add_argument("--out", required=True, help="results folder (resumed when it exists)")
    r.add_argument("--heads", help="comma-separated heads to use (default: all)")
    r.add_argument("--no-router", action="store_true",
                   help="equal weights even when the checkpoint has a router")
    r.add_argument("--threshold", type=float, default=0.01,
                   help="skip heads whose router weight is below this (default 0.01)")
    r.add_argument("--confidence", type=float, default=0.5,
                   help="flag rows whose largest router weight is below this (default 0.5)")
    r.add_argument("--forces", action="store_true", help="also forces (fmax column)")
    r.add_argument("--precision", choices=["fp64", "fp32", "bf16"], default="fp32")
    r.add_argument("--device", default="auto")
    r.add_argument("--chunk-size", type=int, default=4096,
                   help="candidates per Parquet chunk and resume unit")
    r.add_argument("--workers", type=int, default=1, help="graph-building processes")
    r.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the backbone (auto: for 20,000 candidates or more; the "
                        "first batch pays ~30 s of compilation)")
    r.add_argument("--cuda-graphs", action="store_true",
                   help="with --compile on CUDA, also replay CUDA graphs (not yet measured)")
    r.add_argument("--max-atoms", type=int)
    r.add_argument("--max-edges", type=int)
    r.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    r.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("top", help="rank screening results")
    t.add_argument("results", help="results folder of screen run")
    t.add_argument("--k", type=int, default=100)
    t.add_argument("--by", default="energy_per_atom",
                   help="column: energy_per_atom, relative_energy_per_atom, spread, fmax, "
                        "e_<head>, ... (energies ascending, others descending)")
    order = t.add_mutually_exclusive_group()
    order.add_argument("--ascending", dest="descending", action="store_false", default=None)
    order.add_argument("--descending", dest="descending", action="store_true")
    t.add_argument("--csv", help="also write the rows to this CSV file")


def run(args) -> int:
    return {"generate": _generate, "run": _run, "top": _top}[args.screen_verb](args)


def _generate(args) -> int:
    from atomgfm.screen.generate import CandidateGenerator

    g = CandidateGenerator.from_file(args.spec)
    for k, (kind, n) in enumerate(g.counts()):
        print(f"family {k} ({kind}): {n:,} candidates")
    print(f"total: {len(g):,} candidates")
    for c in g.iter(0, args.show):
        print(f"{c.index:>10}  {c.id}  ({c.structure.n_atoms} atoms)")
    if args.write:
        from ase import Atoms
        from ase.io import write

        def atoms():
            for c in g.iter(0, args.show or None):
                s = c.structure
                a = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
                a.info.update(id=c.id, index=c.index, charge=int(s.charge), spin=int(s.spin))
                yield a

        write(args.write, atoms(), format="extxyz")
        print(f"wrote {args.write}")
    return 0


def _run(args) -> int:
    import torch

    from atomgfm.screen.generate import CandidateGenerator
    from atomgfm.screen.run import FileCandidates, Screener, ScreenSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ScreenSettings(threshold=args.threshold, confidence=args.confidence,
                              forces=args.forces, precision=args.precision, device=args.device,
                              chunk_size=args.chunk_size, workers=args.workers,
                              max_atoms=args.max_atoms, max_edges=args.max_edges,
                              compile=args.compile, cuda_graphs=args.cuda_graphs,
                              progress=not args.no_progress)
    heads = args.heads.split(",") if args.heads else None
    screener = Screener.from_checkpoint(args.checkpoint, settings, heads, not args.no_router)
    source = (CandidateGenerator.from_file(args.spec) if args.spec
              else FileCandidates(args.input, args.format))
    s = screener.run(source, args.out)
    print(f"screened {s['scored']:,} candidates ({s['errors']} could not be scored, see the "
          f"error column) in {s['seconds']:.1f} s, {s['structures_per_s']:.1f} structures/s; "
          f"{s['chunks']} chunk(s) written, {s['skipped_chunks']} already done -> {args.out}")
    return 0


def _top(args) -> int:
    from atomgfm.screen.results import top

    rows = top(args.results, args.k, args.by, args.descending)
    cols = ["index", "id", "formula", args.by, "energy_per_atom", "spread", "low_confidence",
            "unknown_elements"]
    cols = list(dict.fromkeys(c for c in cols if not rows or c in rows[0]))
    print("  ".join(cols))
    for r in rows:
        print("  ".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else cols)
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    return 0
