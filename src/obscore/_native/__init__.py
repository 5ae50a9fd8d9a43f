"""Cython kernels: ring buffers, rollups, histograms, z-scores and isolation forests."""
