"""Manifest v1: the model, its checks, and YAML with file:line errors."""
