"""Cython kernels behind obscore: ring buffers, rollups, histograms, z-scores, forests."""
