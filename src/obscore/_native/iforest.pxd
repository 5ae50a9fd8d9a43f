# Isolation forest scoring over flat, branch-free tree arrays.

from obscore._native._types cimport float32_t, float64_t, int32_t, int64_t, uint8_t


cdef struct ForestView:
    # Node arrays are per tree, indexed from the tree's root at tree_offset.
    const int64_t* feature_offset  # input column tested * rows per block (mapped columns)
    const int32_t* threshold_key   # order key of the largest float32 <= split; INT32_MAX at leaves
    const int64_t* child           # tree-local left child, right is child + 1; leaf: itself
    const uint8_t* nan_right       # 1 when a NaN value goes right; 0 at leaves
    const float64_t* leaf_value    # path length a leaf credits (depth + c(samples)); 0 inside
    const int64_t* tree_offset     # per tree + 1: index of each tree's root in the node arrays
    const int32_t* tree_depth      # per tree: steps from the root to its deepest leaf
    const int64_t* full_node       # complete layout: feature offset << 32 | threshold key
    const float64_t* full_leaf     # complete layout: path length per bottom position
    const int64_t* full_offset     # per tree + 1: first node of each tree in full_node
    const int64_t* leaf_offset     # per tree + 1: first leaf of each tree in full_leaf
    bint has_full                  # whether the complete layout was built (shallow trees)
    int64_t n_trees                # trees in the forest
    int64_t n_features             # input columns expected
    float64_t denominator          # n_trees * c(max_samples); 0 for one-sample trees


cdef class Forest:
    cdef int64_t _n_trees          # trees in the forest
    cdef int64_t _n_features       # input columns the forest reads
    cdef int64_t _max_depth        # deepest leaf over all trees, in steps from the root
    cdef float64_t _denominator    # n_trees * c(max_samples): normalises summed path lengths
    cdef object _feature           # ndarray int32 (n_nodes,): input column tested per node
    cdef object _threshold         # ndarray float32 (n_nodes,): go right when float32(x) > it
    cdef object _child             # ndarray int32 (n_nodes,): tree-local left child
    cdef object _nan_right         # ndarray uint8 (n_nodes,): NaN goes right
    cdef object _leaf_value        # ndarray float64 (n_nodes,): path length at leaves
    cdef object _tree_offset       # ndarray int64 (n_trees + 1,): root of each tree
    cdef object _tree_depth        # ndarray int32 (n_trees,): deepest leaf per tree
    cdef object _feature_offset    # ndarray int64 (n_nodes,): feature * rows per block (walk)
    cdef object _child64           # ndarray int64 (n_nodes,): child widened (walk)
    cdef object _threshold_key     # ndarray int32 (n_nodes,): order keys of threshold (walk)
    cdef object _full_node         # ndarray int64: complete trees, packed offset and key (walk)
    cdef object _full_leaf         # ndarray float64: path length per bottom node (walk)
    cdef object _full_offset       # ndarray int64 (n_trees + 1,): root of each complete tree
    cdef object _leaf_offset       # ndarray int64 (n_trees + 1,): first bottom node per tree
    cdef ForestView _view          # raw pointers into the arrays above

    cdef void _bind(self)
