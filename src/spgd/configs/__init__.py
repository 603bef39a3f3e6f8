"""Packaged task presets (YAML)."""
