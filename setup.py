"""Build the Cython kernels of ``obscore._native``.

Compiler directives live here and nowhere else.  ``OBSCORE_CYTHON_DEBUG=1``
turns bounds and wrap-around checks back on for test runs.
"""

from __future__ import annotations

import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["ringbuf", "rollup", "histogram", "zscore", "iforest", "expo"]

debug = os.environ.get("OBSCORE_CYTHON_DEBUG") == "1"
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": not debug,
}

# C headers a kernel includes: a change to one rebuilds the kernel.
HEADERS = {
    "histogram": ["src/obscore/_native/_hist_index.h"],
    "ringbuf": ["src/obscore/_native/_ringbuf_push.h"],
    "zscore": ["src/obscore/_native/_zscore_block.h"],
}

# The isolation-forest kernel splits rows across threads with OpenMP.
OPENMP = {"iforest"}

# sqrt() may set errno, which keeps GCC from vectorizing loops that call it;
# no kernel reads errno, and NaN/Inf results are unchanged (IEEE semantics
# stay: no -ffast-math).
FLAGS = ["-O3", "-fno-math-errno"]

# zscore's vector clones must give the bits of its scalar loop, so no fused
# multiply-add (AVX-512 clones would use it); and GCC vectorizes its
# branch-free passes only if it may compute both sides of a select, which it
# refuses while it assumes floating-point traps. No value changes: NaN and
# +-Inf still propagate, and no kernel reads the floating-point flags.
KERNEL_FLAGS = {"zscore": ["-ffp-contract=off", "-fno-trapping-math"]}

extensions = [
    Extension(
        f"obscore._native.{name}",
        [f"src/obscore/_native/{name}.pyx"],
        depends=HEADERS.get(name, []),
        include_dirs=[np.get_include()],
        extra_compile_args=[
            *FLAGS,
            *(["-fopenmp"] if name in OPENMP else []),
            *KERNEL_FLAGS.get(name, []),
        ],
        extra_link_args=["-fopenmp"] if name in OPENMP else [],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
