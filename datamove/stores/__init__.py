"""Stores: locations, listings, atomic writers, and safe local paths."""
