"""``atomgfm info [CHECKPOINT]``: what a checkpoint holds; without one, the registry."""

from __future__ import annotations

import json

HELP = "what a checkpoint holds; without one, the registry"
ORDER = 90


def add_arguments(p) -> None:
    p.add_argument("checkpoint", nargs="?")


def registry_info() -> dict:
    """The registry, with what a user chooses from: backbone settings (defaults, search ranges),
    presets and feature kinds; reader formats, suffixes and backend packages."""
    import dataclasses

    from atomgfm.registry import KINDS, get, names

    info: dict = {kind: names(kind) for kind in KINDS}
    backbones = {}
    for name in names("backbone"):
        cls = get("backbone", name)
        space = cls.search_space()
        backbones[name] = {
            "feature_kind": cls.feature_kind, "presets": cls.presets,
            "settings": {f.name: {"default": f.default, **{k: v for k, v in space.get(
                f.name, {}).items() if k != "default"}} for f in dataclasses.fields(cls.Settings)}}
    info["backbone"] = backbones
    readers = {}
    for name in names("reader"):
        spec = get("reader", name)
        readers[name] = {"suffixes": " ".join(spec.suffixes[:12])
                         + (" ..." if len(spec.suffixes) > 12 else ""),
                         "requires": list(spec.requires)}
    info["reader"] = readers
    return info


def run(args) -> int:
    from atomgfm.models.checkpoint import read_checkpoint

    if args.checkpoint is None:  # what this installation can build and read
        print(json.dumps(registry_info(), indent=2, ensure_ascii=False))
        return 0

    st = read_checkpoint(args.checkpoint)
    info = {"step": st.get("step"), "model": st["config"]["model"], "elements": st["elements"],
            "datasets": [{k: d[k] for k in ("name", "id", "level_of_theory", "labels",
                                             "n_train", "n_val", "provenance")}
                         for d in st["datasets"]],
            "metrics": st.get("metrics")}
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0
