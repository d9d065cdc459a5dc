"""Checking many results without opening each overlay: per-object tracks, flags, and one HTML page."""
