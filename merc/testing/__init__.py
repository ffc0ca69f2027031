"""Test and benchmark fixtures: synthetic corpora with known ground truth."""
