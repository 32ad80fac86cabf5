"""Launch constants that the host side (gpuops/<family>.py) and the kernels (gpuops/cuda/<family>.py)
must agree on: block sizes the kernels index with, tile shapes their shared memory is sized for, the
kernel variants that are generated.  One definition each, here, so the two sides cannot drift apart.

Numba-free (plain Python values): family modules import it without importing numba.  Constants that
only one side uses stay in that side's module.
"""

# ---------------------------------------------------------------------------------------------
# CUDA limits

#: most blocks along grid y or z (CUDA's limit); larger extents are walked with grid-stride loops
MAX_GRID_YZ = 65535
#: most blocks along grid x (CUDA's limit), the cap of `gpuops._grid.blocks_for`
MAX_GRID_X = 2**31 - 1
#: dynamic shared memory a block may use without the opt-in attribute (the kernels never opt in)
SHARED_BYTES = 48 * 1024

# ---------------------------------------------------------------------------------------------
# elementwise (gsmelu, ncrelu)

#: threads per block of the elementwise launches (the host's grid arithmetic assumes it)
ELEMENTWISE_THREADS = 256
#: elements per thread, a block-width apart, of the scalar kernels (all loaded before any is stored)
ELEMENTWISE_ITEMS = 8
#: elements per thread of the scalar gsmelu forward (written out as a four-way unroll there)
ELEMENTWISE_FORWARD_ITEMS = 4
#: 64-bit words per thread of the word kernels (32 bytes of each array in flight)
ELEMENTWISE_WORDS = 4

# ---------------------------------------------------------------------------------------------
# diag (dgmm, cdgmm)

#: threads per block of the scale kernels (their shared reduction buffers are sized for it)
DIAG_THREADS = 256
#: elements (or words) per thread and loop step of the scale kernels (written out in the kernels)
DIAG_UNROLL = 4
#: outputs per block of SUM_SEGMENTS (a warp's coalesced row of partial sums)
DIAG_SUM_COLUMNS = 32

# ---------------------------------------------------------------------------------------------
# conv (depthwise convolution, im2col, col2im)

#: threads per block of DW_TILED and the generic weight-gradient kernels (they stride by it, and size
#: their shared reduction scratch by it)
CONV_THREADS = 256
#: DW_TILED tile width: one warp across (the kernels find a thread's column as ``tid & 31``)
CONV_TILE_W = 32
#: DW_TILED tile height: 8 thread rows × 4 outputs per thread, 8 rows apart
CONV_TILE_H = 32
#: kernel sizes (K × K, dilation 1) that get generated, fully unrolled kernels
CONV_FAST_SIZES = (3, 5, 7)
#: strides that get generated flat kernels (stride 1 also gets the shared-memory tile kernels)
CONV_FAST_STRIDES = (1, 2)
#: output rows per thread of the generated kernels (a vertical strip of NY outputs in registers)
CONV_NY = 8
#: most threads per block of the generated kernels: the weight gradients' shared scratch is sized for it
CONV_FAST_THREADS = 256
#: launches (bands of tap rows) of the generated weight gradient per kernel size: one band's sums must fit
#: in registers next to the strip's values
CONV_WGRAD_PARTS = {3: 1, 5: 2, 7: 2}
#: threads that split the groups of one output in the channels-last weight gradient's stage 2 (a block takes 32
#: outputs: 32 × this many threads), so its sums over many groups are not one thread's chain of loads
CONV_WGRAD_FINAL_ROWS = 8

# ---------------------------------------------------------------------------------------------
# correlation (spatial_correlation_sample, correlation)

#: block of the generic tiled kernels: CORR_TY × CORR_TX threads over as many input positions
CORR_TX = 32
CORR_TY = 8
#: accumulators per thread of the generic kernels (patch columns of one group): FlowNetC's 21 in one group
CORR_G = 21
#: staged input2 row width of the generic forward (32 + (group − 1)·dpW must fit)
CORR_FWD_W2 = 96
#: staged partner row width of the generic backward
CORR_BWD_W2 = 80
#: channels per block of the generic backward: 16-bit and float32 data, and float64
CORR_BWD_CB = 16
CORR_BWD_CB64 = 4
#: group widths G of the generated register-tiled (RT) kernels, one kernel pair each
CORR_RT_GROUPS = (21, 9)
#: warps per block of the RT kernels (block = 32 × CORR_RT_NW threads)
CORR_RT_NW = 8
#: rows of an RT block region before the x-phase split (2 per warp)
CORR_RT_ROWS = 16
#: channels per block of the RT backward
CORR_RT_CB = 12
#: patch dilations (x) the RT kernels' phase split handles: 2**ldp with ldp <= 2
CORR_RT_DILATIONS = (1, 2, 4)
#: the RT kernels index their arrays with 32-bit offsets: every array must have fewer elements
CORR_RT_MAX_ELEMENTS = 2**31

# ---------------------------------------------------------------------------------------------
# per-pixel filters (involution, weighted_filter)

#: threads per block of the per-pixel launches (the kernels stride by blockDim; the host plans grids with it)
PERPIXEL_THREADS = 256
#: most channels of one kernel group a thread of PP_GATHER / PP_TRANSPOSE owns (its register block holds
#: PERPIXEL_ROWS × PERPIXEL_CHUNK sums); a group of cpg channels is cut into ceil(cpg / PERPIXEL_CHUNK)
#: chunks of equal size (± 1), so any cpg works
PERPIXEL_CHUNK = 8
#: the same for float64 data (its sums take two registers each)
PERPIXEL_CHUNK_F64 = 4
#: output rows (one column) a thread of PP_GATHER / PP_TRANSPOSE owns: a strip whose windows share input
#: rows, each loaded once per strip instead of once per output row
PERPIXEL_ROWS = 4
#: channels of a group whose centre values a PP_WGRAD thread keeps in registers across all taps (larger
#: groups are walked in chunks of this many, the centre values reloaded per tap)
PERPIXEL_WGRAD_CHUNK = 16
#: the same for float64 data
PERPIXEL_WGRAD_CHUNK_F64 = 8
#: rows (one column) of the weight gradient a PP_WGRAD thread owns
PERPIXEL_WGRAD_ROWS = 2
#: groups of at most this many channels (KPN's RGB) take the _FEW kernels, whose register tiles are
#: PERPIXEL_FEW_ROWS rows × PERPIXEL_FEW channels (PP_GATHER_FEW, PP_TRANSPOSE_FEW; float64:
#: PERPIXEL_FEW_F64 channels) and PERPIXEL_WGRAD_FEW_ROWS rows × PERPIXEL_FEW channels (PP_WGRAD_FEW, every dtype)
PERPIXEL_FEW = 4
PERPIXEL_FEW_F64 = 2
PERPIXEL_FEW_ROWS = 8
PERPIXEL_WGRAD_FEW_ROWS = 4

# ---------------------------------------------------------------------------------------------
# RAFT (patch_correlate, corr_lookup)

#: threads per block of the RAFT launches (the kernels stride by blockDim; the host plans grids with it)
RAFT_THREADS = 256
#: largest block of BUCKET_SCAN: its shared array of per-thread sums is sized for it
RAFT_SCAN_THREADS = 256
#: a lookup coordinate beyond ±RAFT_COORD_LIMIT (or NaN, ±Inf) makes its query sample zeros: CUDA kernels and
#: CPU mirror must draw the line at the same place
RAFT_COORD_LIMIT = 2.0 ** 40
#: queries per block of the window kernels (one warp each: its lanes split the channels)
RAFT_WINDOW_WARPS = 4
#: the window kernels keep a query's (2r+2)² window sums in shared memory sized for this radius; larger
#: radii take the direct kernels
RAFT_WINDOW_MAX_RADIUS = 7
#: lanes that share one window dot product (a warp computes 32 / this many window sums at once)
RAFT_WINDOW_DOT_LANES = 8
#: threads per block of the channels-last transposes (32×32 tiles, 32 / 8 rows per pass)
RAFT_TRANSPOSE_THREADS = 256
#: the map gradient splits each pixel's cells into ranges until about this many warps run per level
RAFT_WINDOW_MAP_WARPS = 16384

# ---------------------------------------------------------------------------------------------
# RAFT pyramid (corr_pyramid, corr_pyramid_lookup)

#: threads per block of the pyramid's elementwise-style launches (pooling, lookups; grid-stride loops)
PYRAMID_THREADS = 256
#: the numba GEMM fallback: PYRAMID_GEMM_TILE × PYRAMID_GEMM_TILE outputs per block, blocks of
#: PYRAMID_GEMM_TILE × PYRAMID_GEMM_ROWS threads (each thread TILE / ROWS outputs of one column), K in steps of
#: PYRAMID_GEMM_TILE (its shared tiles are sized for these)
PYRAMID_GEMM_TILE = 32
PYRAMID_GEMM_ROWS = 8
