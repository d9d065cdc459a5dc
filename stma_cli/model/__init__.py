"""The STMA network: tensors in, tensors out (no file or CLI code here)."""
from stma_cli.model.decoder import label_map, soft_aggregate
from stma_cli.model.stma import LOGIT_STRIDE, STMA, FrameFeatures, MemoryEntry, STMAConfig, upsample_logits

__all__ = ["STMA", "STMAConfig", "FrameFeatures", "MemoryEntry", "LOGIT_STRIDE", "label_map", "soft_aggregate",
           "upsample_logits"]
