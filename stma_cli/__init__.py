"""stma: semi-supervised video object segmentation with STMA."""
__version__ = "0.1.0"
