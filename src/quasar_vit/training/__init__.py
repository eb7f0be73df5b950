"""Supernet training, evaluation, checkpoints and the data-parallel plumbing."""
