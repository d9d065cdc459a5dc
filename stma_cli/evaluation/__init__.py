"""Scoring for `stma eval`: DAVIS-2017 metrics, dataset layouts, YouTube-VOS submissions."""
