"""Isolation forest scoring, matching scikit-learn's ``score_samples``.

A fitted ``sklearn.ensemble.IsolationForest`` is exported once into flat node
arrays. Scoring walks every tree a fixed number of steps without branches:
leaves point to themselves, so a row that reaches a leaf early stays there.
Trees up to depth 16 are also laid out complete (children of node n at
2n + 1 and 2n + 2), which the fast walk uses.
Rows are scored in blocks of 64, trees outer and rows inner, so one tree
stays in the L1 cache while a block walks it; each block is cast to float32
(as scikit-learn casts X) and turned into integer keys that sort like the
floats, once.
"""

from __future__ import annotations

import numpy as np

from cython.parallel cimport prange, threadid
from libc.math cimport exp2, isnan
from libc.stdlib cimport free, malloc
from libc.stdint cimport INT32_MAX
from libc.string cimport memcpy, memset

from obscore._native._types cimport float32_t, float64_t, int32_t, int64_t, intp_t, uint8_t

cdef extern from *:
    """
    #ifdef _OPENMP
    #define OBSCORE_HAVE_OPENMP 1
    #else
    #define OBSCORE_HAVE_OPENMP 0
    #endif
    """
    int OBSCORE_HAVE_OPENMP

# True when the module was built with OpenMP, so n_threads > 1 runs in parallel.
HAVE_OPENMP = bool(OBSCORE_HAVE_OPENMP)

cdef enum:
    _BLOCK = 64  # rows walked together through one tree
    _FULL_DEPTH = 16  # deepest tree walked in the complete layout (2**17 nodes)


# --- iforest: export a fitted scikit-learn model ---

def _average_path_length(n):
    # c(n) of the isolation forest paper: c(1) = 0, c(2) = 1, else
    # c(n) = 2 (ln(n - 1) + gamma) - 2 (n - 1) / n, evaluated with the same
    # float64 operations as scikit-learn so leaf values come out bit-identical.
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_at_most(threshold):
    # Largest float32 <= each float64 threshold. scikit-learn compares the
    # float32 input with the float64 threshold; for a float32 x,
    # x <= t holds exactly when x <= this value, so the walk stays in float32.
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _export_tree(tree, features):
    # Renumber one sklearn tree breadth first so each node's children sit
    # side by side (right = left + 1); leaves point to themselves.
    left = tree.children_left
    right = tree.children_right
    n_nodes = left.shape[0]
    new_id = np.empty(n_nodes, dtype=np.int64)
    depth = np.empty(n_nodes, dtype=np.int64)  # root = 1, as sklearn counts
    new_id[0] = 0
    depth[0] = 1
    frontier = np.array([0], dtype=np.int64)
    next_id = 1
    while frontier.size:
        inner = frontier[left[frontier] != -1]
        first = next_id + 2 * np.arange(inner.size, dtype=np.int64)
        new_id[left[inner]] = first
        new_id[right[inner]] = first + 1
        depth[left[inner]] = depth[inner] + 1
        depth[right[inner]] = depth[inner] + 1
        next_id += 2 * inner.size
        frontier = np.stack((left[inner], right[inner]), axis=1).ravel()

    is_leaf = left == -1
    feature = np.zeros(n_nodes, dtype=np.int32)
    threshold = np.full(n_nodes, np.inf, dtype=np.float32)
    child = np.empty(n_nodes, dtype=np.int32)
    nan_right = np.zeros(n_nodes, dtype=np.uint8)
    leaf_value = np.zeros(n_nodes, dtype=np.float64)

    inner = ~is_leaf
    local_feature = tree.feature[inner]
    feature[new_id[inner]] = local_feature if features is None else features[local_feature]
    threshold[new_id[inner]] = _float32_at_most(tree.threshold[inner])
    child[new_id[inner]] = new_id[left[inner]]
    child[new_id[is_leaf]] = new_id[is_leaf]
    go_left = getattr(tree, "missing_go_to_left", None)
    if go_left is not None:
        nan_right[new_id[inner]] = np.asarray(go_left)[inner] == 0
    else:
        nan_right[new_id[inner]] = 1  # before sklearn 1.3, NaN <= t was false
    # sklearn credits depth + c(n) - 1.0 with depth counted from 1 at the root.
    path = depth + _average_path_length(tree.n_node_samples) - 1.0
    leaf_value[new_id[is_leaf]] = path[is_leaf]
    return feature, threshold, child, nan_right, leaf_value, int(depth.max() - 1)


def _order_keys(threshold):
    # int32 keys that sort like the float32 thresholds (see _order_key);
    # +Inf (leaves) gets INT32_MAX so no value, NaN included, passes a leaf.
    t = np.asarray(threshold, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0
    bits = t.view(np.int32)
    keys = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    keys[np.isposinf(t)] = np.iinfo(np.int32).max
    return keys


# --- iforest: score rows ---

# NOTE: measured single-thread at 200k-1M rows x 8 features, 100 trees of 256
# samples, on the 2-core dev machine (noisy, best of several runs): 64 rows
# walking in lockstep through a node-index array 1.0M rows/s; 8 rows with
# their node indexes in registers 1.0M -> 1.3M once feature offsets and
# children were int64 (no sign extensions); integer order keys instead of
# float compares 1.5M; 16 rows in registers no better than 8; a complete
# implicit tree (children at 2n+1, 2n+2) 1.2M. sklearn 1.9 score_samples:
# 0.17-0.19M rows/s under the same conditions. Later, at 100k rows in CPU
# time on the loaded machine (bench.py, iforest case): the complete layout
# with integer keys and feature offset and key packed in one int64 matched
# the node-array walk (1.05M both, so loads do not bound it); the depth-8
# walk specialized 1.11M; exp2 for the final score instead of pow 1.15M,
# 5.4x -> 6.0x sklearn.

cdef inline int32_t _order_key(float64_t x) noexcept nogil:
    # An int32 that sorts like float32(x), so the walk compares integers
    # instead of floats. -0.0 is folded into +0.0 first (they compare equal
    # as floats); NaN gets INT32_MAX, above every other key.
    cdef float32_t f = (<float32_t>x) + <float32_t>0.0
    cdef int32_t bits
    memcpy(&bits, &f, sizeof(bits))
    if isnan(x):
        return INT32_MAX
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


cdef inline void _walk_8(const int64_t* feature, const int32_t* threshold,
                         const int64_t* child, const float64_t* leaf_value, intp_t depth,
                         const int32_t* x, float64_t* acc) noexcept nogil:
    # Walk 8 rows down one tree at once (x[feature[n] + i] is the key of the
    # value row i is tested on at node n). The node indexes stay in
    # registers and their chains of loads overlap; a leaf points to itself
    # with threshold INT32_MAX, so extra steps keep a row in place.
    cdef intp_t d
    cdef intp_t n0 = 0, n1 = 0, n2 = 0, n3 = 0, n4 = 0, n5 = 0, n6 = 0, n7 = 0
    for d in range(depth):
        n0 = child[n0] + (x[feature[n0] + 0] > threshold[n0])
        n1 = child[n1] + (x[feature[n1] + 1] > threshold[n1])
        n2 = child[n2] + (x[feature[n2] + 2] > threshold[n2])
        n3 = child[n3] + (x[feature[n3] + 3] > threshold[n3])
        n4 = child[n4] + (x[feature[n4] + 4] > threshold[n4])
        n5 = child[n5] + (x[feature[n5] + 5] > threshold[n5])
        n6 = child[n6] + (x[feature[n6] + 6] > threshold[n6])
        n7 = child[n7] + (x[feature[n7] + 7] > threshold[n7])
    acc[0] += leaf_value[n0]
    acc[1] += leaf_value[n1]
    acc[2] += leaf_value[n2]
    acc[3] += leaf_value[n3]
    acc[4] += leaf_value[n4]
    acc[5] += leaf_value[n5]
    acc[6] += leaf_value[n6]
    acc[7] += leaf_value[n7]


cdef inline void _walk_full_8(const int64_t* node, const float64_t* leaf, intp_t depth,
                              intp_t first_leaf, const int32_t* x,
                              float64_t* acc) noexcept nogil:
    # _walk_8 over a complete tree: the children of node n are 2n + 1 and
    # 2n + 2, so no child is loaded, and one 64-bit load gives the feature
    # offset (high half) and the threshold key (low half). A leaf above the
    # bottom is extended by nodes no key passes, so rows keep going left.
    cdef intp_t d
    cdef intp_t n0 = 0, n1 = 0, n2 = 0, n3 = 0, n4 = 0, n5 = 0, n6 = 0, n7 = 0
    cdef int64_t w0, w1, w2, w3, w4, w5, w6, w7
    for d in range(depth):
        w0 = node[n0]
        w1 = node[n1]
        w2 = node[n2]
        w3 = node[n3]
        w4 = node[n4]
        w5 = node[n5]
        w6 = node[n6]
        w7 = node[n7]
        n0 = 2 * n0 + 1 + (x[(w0 >> 32) + 0] > <int32_t>w0)
        n1 = 2 * n1 + 1 + (x[(w1 >> 32) + 1] > <int32_t>w1)
        n2 = 2 * n2 + 1 + (x[(w2 >> 32) + 2] > <int32_t>w2)
        n3 = 2 * n3 + 1 + (x[(w3 >> 32) + 3] > <int32_t>w3)
        n4 = 2 * n4 + 1 + (x[(w4 >> 32) + 4] > <int32_t>w4)
        n5 = 2 * n5 + 1 + (x[(w5 >> 32) + 5] > <int32_t>w5)
        n6 = 2 * n6 + 1 + (x[(w6 >> 32) + 6] > <int32_t>w6)
        n7 = 2 * n7 + 1 + (x[(w7 >> 32) + 7] > <int32_t>w7)
    acc[0] += leaf[n0 - first_leaf]
    acc[1] += leaf[n1 - first_leaf]
    acc[2] += leaf[n2 - first_leaf]
    acc[3] += leaf[n3 - first_leaf]
    acc[4] += leaf[n4 - first_leaf]
    acc[5] += leaf[n5 - first_leaf]
    acc[6] += leaf[n6 - first_leaf]
    acc[7] += leaf[n7 - first_leaf]


cdef inline void _walk_1(const int64_t* feature, const int32_t* threshold,
                         const int64_t* child, const float64_t* leaf_value, intp_t depth,
                         const int32_t* x, float64_t* acc) noexcept nogil:
    cdef intp_t d, nd = 0
    for d in range(depth):
        nd = child[nd] + (x[feature[nd]] > threshold[nd])
    acc[0] += leaf_value[nd]


cdef intp_t _score_block(const ForestView* f, const float64_t** columns, intp_t r0,
                         intp_t nr, int32_t* xb, float64_t* acc,
                         uint8_t* has_nan, float64_t* scores) noexcept nogil:
    # Score rows r0 .. r0 + nr (nr <= _BLOCK); return how many held a NaN.
    cdef intp_t r, j, t, d, nd, depth, n_nan = 0
    cdef float64_t x
    cdef int32_t key
    cdef const int64_t* feature
    cdef const int32_t* threshold
    cdef const int64_t* child
    cdef const uint8_t* nan_right
    cdef const float64_t* leaf_value
    cdef const int64_t* full_node
    cdef const float64_t* full_leaf

    # Key this block of every column once (through float32, as sklearn casts X).
    memset(has_nan, 0, nr)
    for j in range(f.n_features):
        for r in range(nr):
            x = columns[j][r0 + r]
            xb[j * _BLOCK + r] = _order_key(x)
            has_nan[r] |= isnan(x)
    for r in range(nr):
        acc[r] = 0.0
        n_nan += has_nan[r]

    for t in range(f.n_trees):
        feature = f.feature_offset + f.tree_offset[t]
        threshold = f.threshold_key + f.tree_offset[t]
        child = f.child + f.tree_offset[t]
        leaf_value = f.leaf_value + f.tree_offset[t]
        depth = f.tree_depth[t]
        r = 0
        if f.has_full:
            full_node = f.full_node + f.full_offset[t]
            full_leaf = f.full_leaf + f.leaf_offset[t]
            if depth == 8:
                # 256-sample trees (sklearn's default): a constant depth lets
                # the compiler unroll the walk, with no loop exit to mispredict
                while r + 8 <= nr:
                    _walk_full_8(full_node, full_leaf, 8, 255, xb + r, acc + r)
                    r += 8
            while r + 8 <= nr:
                # the bottom level starts at node 2**depth - 1
                _walk_full_8(full_node, full_leaf, depth, (<intp_t>1 << depth) - 1,
                             xb + r, acc + r)
                r += 8
        while r + 8 <= nr:
            _walk_8(feature, threshold, child, leaf_value, depth, xb + r, acc + r)
            r += 8
        while r < nr:
            _walk_1(feature, threshold, child, leaf_value, depth, xb + r, acc + r)
            r += 1

    if n_nan > 0:
        # The fast walk sends NaN right at every split; redo those rows with
        # sklearn's rule, the side recorded in the tree for missing values.
        for r in range(nr):
            if not has_nan[r]:
                continue
            acc[r] = 0.0
            for t in range(f.n_trees):
                feature = f.feature_offset + f.tree_offset[t]
                threshold = f.threshold_key + f.tree_offset[t]
                child = f.child + f.tree_offset[t]
                nan_right = f.nan_right + f.tree_offset[t]
                leaf_value = f.leaf_value + f.tree_offset[t]
                nd = 0
                for d in range(f.tree_depth[t]):
                    key = xb[feature[nd] + r]
                    if key == INT32_MAX:
                        nd = child[nd] + nan_right[nd]
                    else:
                        nd = child[nd] + (key > threshold[nd])
                acc[r] += leaf_value[nd]

    for r in range(nr):
        if f.denominator == 0:
            scores[r0 + r] = -0.5  # one-sample trees: sklearn scores 2**-1
        else:
            scores[r0 + r] = -exp2(-(acc[r] / f.denominator))
    return n_nan


def iforest_score(Forest forest, list columns, float64_t[::1] scores, int n_threads=1) -> int:
    """Score rows with an exported isolation forest (the kernel behind Forest.score).

    Parameters
    ----------
    forest : Forest
        The exported model.
    columns : list of ndarray of float64, each shape (n,)
        One C-contiguous array per feature, in the model's feature order.
    scores : ndarray of float64, shape (n,)
        Output: ``score_samples`` of scikit-learn, in (-1, 0); lower is more
        anomalous.
    n_threads : int, default 1
        Threads to split row blocks over; more than 1 helps only when the
        module was built with OpenMP (``HAVE_OPENMP``), else it runs on one.

    Returns
    -------
    int
        Number of rows holding at least one NaN feature value.

    Raises
    ------
    ValueError
        If the number of columns or their lengths disagree, or ``n_threads``
        is below 1.
    """
    cdef intp_t n_features = forest._n_features
    cdef intp_t n, j, b, n_blocks, r0, nr, tid
    cdef intp_t n_nan = 0
    cdef const float64_t[::1] column
    cdef const float64_t** pointers
    cdef char* scratch
    cdef intp_t scratch_bytes
    cdef const ForestView* view = &forest._view
    cdef float64_t* out

    if len(columns) != n_features:
        raise ValueError(f"the forest reads {n_features} columns, got {len(columns)}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    n = scores.shape[0]
    views = [None] * n_features
    for j in range(n_features):
        column = columns[j]
        if column.shape[0] != n:
            raise ValueError(
                f"column {j} has {column.shape[0]} rows, expected {n} like scores"
            )
        views[j] = column
    if n == 0:
        return 0

    # Per-thread scratch: the keyed block, path sums, NaN flags.
    scratch_bytes = (n_features * sizeof(int32_t) + sizeof(float64_t)
                     + sizeof(uint8_t)) * _BLOCK
    scratch_bytes = (scratch_bytes + 63) // 64 * 64
    pointers = <const float64_t**>malloc(n_features * sizeof(float64_t*) + 1)
    scratch = <char*>malloc(n_threads * scratch_bytes)
    if pointers == NULL or scratch == NULL:
        free(pointers)
        free(scratch)
        raise MemoryError(f"could not allocate {n_threads * scratch_bytes} bytes of scratch")
    for j in range(n_features):
        column = views[j]
        pointers[j] = &column[0]

    out = &scores[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    with nogil:
        for b in prange(n_blocks, num_threads=n_threads, schedule="static"):
            tid = threadid()
            r0 = b * _BLOCK
            nr = min(<intp_t>_BLOCK, n - r0)
            n_nan += _score_block(
                view, pointers, r0, nr,
                <int32_t*>(scratch + tid * scratch_bytes),
                <float64_t*>(scratch + tid * scratch_bytes
                             + n_features * sizeof(int32_t) * _BLOCK),
                <uint8_t*>(scratch + tid * scratch_bytes
                           + (n_features * sizeof(int32_t) + sizeof(float64_t)) * _BLOCK),
                out,
            )
    free(pointers)
    free(scratch)
    return n_nan


# --- iforest: the forest object ---

cdef class Forest:
    """An isolation forest exported from scikit-learn, ready to score.

    Build one with :meth:`from_sklearn`; the constructor takes the flat node
    arrays (what :attr:`arrays` returns) and exists for pickling.

    Parameters
    ----------
    feature : ndarray of int32, shape (m,)
        Per node, the input column it tests.
    threshold : ndarray of float32, shape (m,)
        Per node, go right when ``float32(x) > threshold``; +Inf at leaves.
    child : ndarray of int32, shape (m,)
        Per node, the tree-local index of its left child (right is one
        more); a leaf holds its own index.
    nan_right : ndarray of uint8, shape (m,)
        Per node, 1 when a NaN value goes right.
    leaf_value : ndarray of float64, shape (m,)
        Per leaf, the path length it credits: depth + c(training samples).
    tree_offset : ndarray of int64, shape (n_trees + 1,)
        Index of each tree's root in the node arrays, then m.
    tree_depth : ndarray of int32, shape (n_trees,)
        Steps from each root to its deepest leaf.
    n_features : int
        Input columns the forest reads.
    denominator : float
        ``n_trees * c(max_samples)``; scores are ``-2 ** (-sum / denominator)``.

    Notes
    -----
    Scores equal ``IsolationForest.score_samples`` to rounding (tested to
    1e-12): inputs are cast to float32 as scikit-learn does, and a NaN
    feature follows the side scikit-learn sends missing values to.
    """

    def __init__(self, feature, threshold, child, nan_right, leaf_value, tree_offset,
                 tree_depth, n_features, denominator):
        self._feature = np.ascontiguousarray(feature, dtype=np.int32)
        self._threshold = np.ascontiguousarray(threshold, dtype=np.float32)
        self._child = np.ascontiguousarray(child, dtype=np.int32)
        self._nan_right = np.ascontiguousarray(nan_right, dtype=np.uint8)
        self._leaf_value = np.ascontiguousarray(leaf_value, dtype=np.float64)
        self._tree_offset = np.ascontiguousarray(tree_offset, dtype=np.int64)
        self._tree_depth = np.ascontiguousarray(tree_depth, dtype=np.int32)
        n_nodes = self._feature.shape[0]
        n_trees = self._tree_depth.shape[0]
        sizes = {a.shape[0] for a in (self._threshold, self._child, self._nan_right,
                                      self._leaf_value)}
        if sizes != {n_nodes} or self._tree_offset.shape[0] != n_trees + 1:
            raise ValueError("node arrays must share one length and tree_offset "
                             "must have n_trees + 1 entries")
        if n_trees == 0 or self._tree_offset[n_trees] != n_nodes:
            raise ValueError(f"tree_offset must end at the node count {n_nodes}")
        if n_nodes and (self._feature.min() < 0 or self._feature.max() >= n_features):
            raise ValueError(f"feature indexes must lie in [0, {n_features})")
        sizes = np.diff(self._tree_offset)
        if (sizes <= 0).any():
            raise ValueError("every tree needs at least one node")
        # Walks index without bounds checks: every child must stay in its tree.
        tree_size = np.repeat(sizes, sizes)
        local = np.arange(n_nodes) - np.repeat(self._tree_offset[:n_trees], sizes)
        right = self._child + (self._child != local)
        if ((self._child < 0) | (right >= tree_size)).any():
            raise ValueError("child indexes must point inside their own tree")
        if (self._tree_depth < 0).any():
            raise ValueError("tree depths must be >= 0")
        if np.isnan(self._threshold).any():
            raise ValueError("thresholds must not be NaN")

        self._n_trees = n_trees
        self._n_features = n_features
        self._max_depth = int(self._tree_depth.max())
        self._denominator = denominator
        for arr in (self._feature, self._threshold, self._child, self._nan_right,
                    self._leaf_value, self._tree_offset, self._tree_depth):
            arr.flags.writeable = False
        self._bind()

    cdef void _bind(self):
        # The walk reads 64-bit feature offsets (feature * _BLOCK) and child
        # indexes: with int32 ones each step paid two sign extensions, and
        # scoring ran about 1.2x slower.
        self._feature_offset = self._feature.astype(np.int64) * _BLOCK
        self._child64 = self._child.astype(np.int64)
        self._threshold_key = _order_keys(self._threshold)
        self._build_full()
        cdef const int64_t[::1] feature = self._feature_offset
        cdef const int32_t[::1] threshold = self._threshold_key
        cdef const int64_t[::1] child = self._child64
        cdef const uint8_t[::1] nan_right = self._nan_right
        cdef const float64_t[::1] leaf_value = self._leaf_value
        cdef const int64_t[::1] tree_offset = self._tree_offset
        cdef const int32_t[::1] tree_depth = self._tree_depth
        self._view.feature_offset = &feature[0]
        self._view.threshold_key = &threshold[0]
        self._view.child = &child[0]
        self._view.nan_right = &nan_right[0]
        self._view.leaf_value = &leaf_value[0]
        self._view.tree_offset = &tree_offset[0]
        self._view.tree_depth = &tree_depth[0]
        cdef const int64_t[::1] full_node
        cdef const float64_t[::1] full_leaf
        cdef const int64_t[::1] full_offset
        cdef const int64_t[::1] leaf_offset
        self._view.has_full = self._full_node is not None
        if self._view.has_full:
            full_node = self._full_node
            full_leaf = self._full_leaf
            full_offset = self._full_offset
            leaf_offset = self._leaf_offset
            self._view.full_node = &full_node[0]
            self._view.full_leaf = &full_leaf[0]
            self._view.full_offset = &full_offset[0]
            self._view.leaf_offset = &leaf_offset[0]
        self._view.n_trees = self._n_trees
        self._view.n_features = self._n_features
        self._view.denominator = self._denominator

    def _build_full(self):
        # Lay every tree out complete to its depth (node n has children 2n + 1
        # and 2n + 2): an inner node packs feature offset and threshold key in
        # one int64; a leaf above the bottom becomes nodes with key INT32_MAX
        # (no row passes, so rows go left) down to its leftmost bottom node,
        # which holds its path length. Skipped for trees deeper than
        # _FULL_DEPTH, whose complete layout would not fit the caches.
        self._full_node = self._full_leaf = self._full_offset = self._leaf_offset = None
        if self._max_depth > _FULL_DEPTH:
            return
        depths = self._tree_depth.astype(np.int64)
        full_offset = np.zeros(self._n_trees + 1, dtype=np.int64)
        leaf_offset = np.zeros(self._n_trees + 1, dtype=np.int64)
        full_offset[1:] = np.cumsum((1 << depths) - 1)
        leaf_offset[1:] = np.cumsum(1 << depths)
        passing_none = np.int64(np.iinfo(np.int32).max)
        node = np.full(max(int(full_offset[-1]), 1), passing_none, dtype=np.int64)
        leaf = np.zeros(leaf_offset[-1], dtype=np.float64)
        packed = (self._feature_offset << 32) | (
            self._threshold_key.astype(np.int64) & 0xFFFFFFFF
        )
        for t in range(self._n_trees):
            first, depth = int(self._tree_offset[t]), int(depths[t])
            child = self._child64[first:int(self._tree_offset[t + 1])]
            frontier = np.zeros(1, dtype=np.int64)  # tree-local node ids
            position = np.zeros(1, dtype=np.int64)  # their complete-layout index
            for level in range(depth + 1):
                is_leaf = child[frontier] == frontier
                if level < depth:
                    inner = ~is_leaf
                    node[full_offset[t] + position[inner]] = packed[first + frontier[inner]]
                # a leaf's leftmost bottom descendant: 2**k (p + 1) - 1
                bottom = ((position[is_leaf] + 1) << (depth - level)) - 1
                leaf[leaf_offset[t] + bottom - ((1 << depth) - 1)] = (
                    self._leaf_value[first + frontier[is_leaf]]
                )
                left = child[frontier[~is_leaf]]
                frontier = np.stack((left, left + 1), axis=1).ravel()
                position = np.stack(
                    (2 * position[~is_leaf] + 1, 2 * position[~is_leaf] + 2), axis=1
                ).ravel()
        self._full_node, self._full_leaf = node, leaf
        self._full_offset, self._leaf_offset = full_offset, leaf_offset

    @staticmethod
    def from_sklearn(model) -> Forest:
        """Export a fitted ``sklearn.ensemble.IsolationForest``.

        Parameters
        ----------
        model : sklearn.ensemble.IsolationForest
            A fitted model.

        Returns
        -------
        Forest

        Raises
        ------
        ValueError
            If the model is not fitted.

        Notes
        -----
        Trees fitted on a subset of the features (``max_features < 1``) read
        the columns named by ``estimators_features_``; with all features
        scikit-learn scores on the columns as given, and so does this.
        """
        if not hasattr(model, "estimators_") or not hasattr(model, "n_features_in_"):
            raise ValueError("the IsolationForest is not fitted; call fit() first")
        n_features = int(model.n_features_in_)
        # Mirror score_samples: it maps columns only when features were subsampled.
        subset = model._max_features != n_features
        parts = []
        depths = []
        offsets = [0]
        for estimator, features in zip(model.estimators_, model.estimators_features_):
            *arrays, depth = _export_tree(
                estimator.tree_, np.asarray(features) if subset else None
            )
            parts.append(arrays)
            depths.append(depth)
            offsets.append(offsets[len(offsets) - 1] + arrays[0].shape[0])
        columns = [np.concatenate(col) for col in zip(*parts)]
        c_max = _average_path_length([model._max_samples])[0]
        denominator = len(model.estimators_) * c_max
        return Forest(*columns, np.array(offsets), np.array(depths), n_features,
                      float(denominator))

    @property
    def n_trees(self) -> int:
        """Trees in the forest."""
        return self._n_trees

    @property
    def n_features(self) -> int:
        """Input columns the forest reads."""
        return self._n_features

    @property
    def max_depth(self) -> int:
        """Deepest leaf over all trees, in steps from the root."""
        return self._max_depth

    @property
    def arrays(self) -> dict:
        """The flat node arrays (read-only), as the constructor takes them."""
        return {
            "feature": self._feature,
            "threshold": self._threshold,
            "child": self._child,
            "nan_right": self._nan_right,
            "leaf_value": self._leaf_value,
            "tree_offset": self._tree_offset,
            "tree_depth": self._tree_depth,
        }

    def score(self, columns: list, n_threads: int = 1):
        """Score rows given as one float64 array per feature.

        Parameters
        ----------
        columns : list of ndarray of float64, each shape (n,)
            One C-contiguous array per feature, in the model's order.
        n_threads : int, default 1
            Threads to use; see :func:`iforest_score`.

        Returns
        -------
        ndarray of float64, shape (n,)
            Equal to scikit-learn's ``score_samples`` on
            ``np.column_stack(columns)``; lower is more anomalous.

        Raises
        ------
        ValueError
            If the number of columns or their lengths disagree.

        Notes
        -----
        NaN values go the way scikit-learn sends them (the side its tree
        records in ``missing_go_to_left``; right for models from scikit-learn
        before 1.3). +-Inf and values beyond float32 range compare as their
        float32 cast. Zero rows give an empty array.
        """
        if len(columns) != self._n_features:
            raise ValueError(
                f"the forest reads {self._n_features} columns, got {len(columns)}"
            )
        n = len(columns[0]) if columns else 0
        scores = np.empty(n, dtype=np.float64)
        iforest_score(self, list(columns), scores, n_threads)
        return scores

    def __reduce__(self):
        a = self.arrays
        return (
            Forest,
            (a["feature"], a["threshold"], a["child"], a["nan_right"], a["leaf_value"],
             a["tree_offset"], a["tree_depth"], self._n_features, self._denominator),
        )
