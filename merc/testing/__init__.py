"""Test and benchmark material: corpora with known faults (built from package-shipped media)."""
