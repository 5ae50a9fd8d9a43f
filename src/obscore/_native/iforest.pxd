# Isolation forest scoring over flat, branch-free tree arrays.

from obscore._native._types cimport float32_t, float64_t, int32_t, int64_t, uint8_t


cdef struct ForestView:
    const int64_t* feature_offset  # per node: input column tested (mapped to the caller's columns) * rows per block
    const float32_t* threshold  # per node: largest float32 <= the float64 split; +Inf at leaves
    const int64_t* child        # per node: tree-local index of the left child; right is child + 1; a leaf points to itself
    const uint8_t* nan_right    # per node: 1 when a NaN value goes right; 0 at leaves
    const float64_t* leaf_value # per node: path length credited at a leaf (depth + c(samples)); 0 inside
    const int64_t* tree_offset  # per tree + 1: index of the tree's root in the node arrays
    const int32_t* tree_depth   # per tree: steps from the root to its deepest leaf
    int64_t n_trees             # trees in the forest
    int64_t n_features          # input columns expected
    float64_t denominator       # n_trees * c(max_samples); 0 for one-sample trees


cdef class Forest:
    cdef int64_t _n_trees          # trees in the forest
    cdef int64_t _n_features       # input columns the forest reads
    cdef int64_t _max_depth        # deepest leaf over all trees, in steps from the root
    cdef float64_t _denominator    # n_trees * c(max_samples): normalises summed path lengths
    cdef object _feature           # ndarray int32 (n_nodes,), see ForestView
    cdef object _threshold         # ndarray float32 (n_nodes,)
    cdef object _child             # ndarray int32 (n_nodes,)
    cdef object _nan_right         # ndarray uint8 (n_nodes,)
    cdef object _leaf_value        # ndarray float64 (n_nodes,)
    cdef object _tree_offset       # ndarray int64 (n_trees + 1,)
    cdef object _tree_depth        # ndarray int32 (n_trees,)
    cdef object _feature_offset    # ndarray int64 (n_nodes,): feature * rows per block, for the walk
    cdef object _child64           # ndarray int64 (n_nodes,): child widened, for the walk
    cdef ForestView _view          # raw pointers into the arrays above

    cdef void _bind(self)
