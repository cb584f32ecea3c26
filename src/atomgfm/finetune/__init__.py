"""Fine-tuning and transfer: scratch | frozen backbone + new heads | full (docs/finetune.md)."""

from atomgfm.finetune.run import (
    FinetuneResult,
    UnseenElementsWarning,
    finetune,
    load_finetune_config,
)

__all__ = ["FinetuneResult", "UnseenElementsWarning", "finetune", "load_finetune_config"]
