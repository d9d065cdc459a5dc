"""File input and output: videos, frame folders, masks, overlays, logits and output folders (no model code)."""
