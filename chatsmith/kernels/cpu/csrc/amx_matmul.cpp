// The bf16 matmul of small_matmul.cpp on CPUs with AMX (Intel Sapphire Rapids and later):
// the same packed weight, multiplied by the tile unit instead of vdpbf16ps.
//
// The packing of matmul.pack, (N / 16, K / 2, 16, 2), is already AMX's layout for the
// right-hand tile: 16 pairs of k x 16 columns x 2 is 16 rows of 64 bytes, one contiguous
// KB per block of 16 columns and 32 values of k. A task takes a tile of 64 columns (4
// accumulator tiles of up to 16 rows x 16 float32, two at a time) and up to 16 rows of x
// at a time, and walks k in steps of 32: x's rows and each block's weights loaded, then one
// tdpbf16ps per block. Each output is summed over k in the same order whatever M is and
// whichever rows share the tile, so a row's result does not depend on the other rows (a
// sequence decodes the same numbers alone or among 31 others); all M go through it, one
// row included, for that reason. SmolLM2-135M's matmuls of one decode step (30 layers and
// the 49k-column head), 2 Xeon cores: 2.6 ms at 1 row (2.7 with vdpbf16ps), 4.8 ms at 32
// (37 with vdpbf16ps, 6.6 with oneDNN's AMX kernels on weights it packed itself). On the
// demo model a batch-1 decode step takes the same as with vdpbf16ps (0.50-0.51 ms).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__AVX512BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CHATSMITH_AMX 1
#endif

namespace chatsmith_amx {

#ifdef CHATSMITH_AMX
namespace {

constexpr int64_t BLOCK = 16;  // columns per accumulator tile
constexpr int NB = 4;          // accumulator tiles: 64 columns, as small_matmul.cpp's tiles
constexpr int64_t TR = 16;     // rows per tile
constexpr int64_t ROWS = 64;   // rows per task, as small_matmul.cpp

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-1 accumulate two blocks of 16 columns; 2-3 hold x's rows at two steps of k; 4-7
// the two blocks' weights at those steps: six independent loads in flight before the four
// multiplies (a weight tile reused within a step would wait for its multiply, and with the
// weights coming from memory the loads would then queue one behind another).
void configure(int rows) {
  TileConfig c;
  for (int t = 0; t < 4; t++) c.rows[t] = rows, c.colsb[t] = 64;
  for (int t = 4; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
  _tile_loadconfig(&c);
}

// Two blocks (32 columns) from w of `rows` rows of x -> float32 into out (stride 64 floats).
void two_blocks(const uint16_t* x, const uint16_t* w, int64_t K, float* out) {
  _tile_zero(0);
  _tile_zero(1);
  const int64_t block = K * BLOCK, steps = K / 32;
  int64_t kb = 0;
  for (; kb + 1 < steps; kb += 2) {
    const uint16_t* wk = w + kb * 32 * BLOCK;
    _tile_loadd(2, x + kb * 32, K * 2);
    _tile_loadd(3, x + kb * 32 + 32, K * 2);
    _tile_loadd(4, wk, 64);
    _tile_loadd(5, wk + block, 64);
    _tile_loadd(6, wk + 32 * BLOCK, 64);
    _tile_loadd(7, wk + block + 32 * BLOCK, 64);
    _tile_dpbf16ps(0, 2, 4);
    _tile_dpbf16ps(1, 2, 5);
    _tile_dpbf16ps(0, 3, 6);
    _tile_dpbf16ps(1, 3, 7);
  }
  if (kb < steps) {  // an odd number of steps
    const uint16_t* wk = w + kb * 32 * BLOCK;
    _tile_loadd(2, x + kb * 32, K * 2);
    _tile_loadd(4, wk, 64);
    _tile_loadd(5, wk + block, 64);
    _tile_dpbf16ps(0, 2, 4);
    _tile_dpbf16ps(1, 2, 5);
  }
  _tile_stored(0, out, NB * BLOCK * sizeof(float));
  _tile_stored(1, out + BLOCK, NB * BLOCK * sizeof(float));
}

// `rows` rows of x (stride K) against one tile of packed weights -> rows x 64 bf16 outputs,
// of which only the first `cols` are stored (the tile at N's end may be partly padding).
void tile_rows(const uint16_t* x, const uint16_t* w, int64_t K, int rows, uint16_t* y, int64_t ldy, int64_t cols) {
  alignas(64) float out[TR][NB * BLOCK];
  two_blocks(x, w, K, &out[0][0]);
  if (cols > 2 * BLOCK) two_blocks(x, w + 2 * K * BLOCK, K, &out[0][2 * BLOCK]);
  for (int j = 0; j < NB; j++) {
    const int64_t left = std::clamp<int64_t>(cols - j * BLOCK, 0, BLOCK);
    if (left == 0) break;
    const __mmask16 mask = left == BLOCK ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    for (int i = 0; i < rows; i++)  // round to nearest even, as ATen's bf16 conversion does
      _mm256_mask_storeu_epi16(y + i * ldy + j * BLOCK, mask,
                               (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(&out[i][j * BLOCK])));
  }
}

}  // namespace

// Linux hands a process the tile registers only once asked (arch_prctl); oneDNN asks too.
// CHATSMITH_AMX=0 keeps every call on vdpbf16ps (read once: a process never mixes the two).
bool usable(int64_t K) {
  static const bool permitted = [] {
    const char* env = std::getenv("CHATSMITH_AMX");
    if (env != nullptr && std::string(env) == "0") return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  }();
  return permitted && K % 32 == 0;
}

void matmul(const uint16_t* X, const uint16_t* W, uint16_t* Y, int64_t M, int64_t K, int64_t n, int64_t tiles) {
  const int64_t chunks = (M + ROWS - 1) / ROWS;
  at::parallel_for(0, chunks * tiles, 1, [&](int64_t begin, int64_t end) {
    int configured = 0;  // the tile configuration is the thread's own
    for (int64_t t = begin; t < end; t++) {
      const int64_t chunk = t / tiles, tile = t % tiles;
      const int64_t col = tile * NB * BLOCK, cols = std::min<int64_t>(NB * BLOCK, n - col);
      for (int64_t m = chunk * ROWS; m < std::min(M, (chunk + 1) * ROWS); m += TR) {
        const int rows = static_cast<int>(std::min<int64_t>(TR, M - m));
        if (rows != configured) configure(rows), configured = rows;
        tile_rows(X + m * K, W + tile * NB * K * BLOCK, K, rows, Y + m * n + col, n, cols);
      }
    }
    _tile_release();  // leave the thread's tiles as found, for oneDNN's own kernels
  });
}

bool built() { return true; }

#else
bool usable(int64_t) { return false; }
void matmul(const uint16_t*, const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int64_t) {}
bool built() { return false; }
#endif

}  // namespace chatsmith_amx
