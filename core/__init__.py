"""Shared foundation: settings, the typed seams between layers, and the encoders."""
