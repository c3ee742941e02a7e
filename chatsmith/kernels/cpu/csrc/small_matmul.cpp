// Matmuls for the few rows of a decode step: y (M, N) = x (M, K) @ w.T, in bf16 on CPUs with
// AVX512-BF16 and in float32 on CPUs with AVX2 or AVX-512. See chatsmith/kernels/cpu/matmul.py
// for why they exist and how w is packed.
//
// bf16:
// The weight comes packed as (N / 16, K / 2, 16, 2): for each block of 16 output columns,
// the 16 columns' two weights of each pair of k, so that one 64-byte load feeds one
// vdpbf16ps (16 float32 lanes, each += x[k] * w[k] + x[k+1] * w[k+1]). A tile is 4 such
// blocks (64 columns); a tile's weights, K * 128 bytes, stay in L1/L2 while every group of
// 4 rows of x runs over them with 16 float32 accumulators in registers, summed over k in
// order. Each output row is therefore summed the same way whatever M is: a row's result
// does not depend on which other rows share the call.
//
// float32: the weight packed as (N / VS, K, VS), VS floats to a vector; a tile is 4 vectors
// wide on AVX-512, 2 on AVX2 (16 registers), and each k adds x[k] * w[k] by FMA. It beats
// oneDNN only at a few rows (its blocking for cache is simpler): matmul.linear calls it
// for one row. It takes up to F32_ROWS; a larger call still gets the right answer, from
// at::linear with the plain weight.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
#include <immintrin.h>
#define CHATSMITH_BF16_MATMUL 1
#endif

namespace chatsmith_amx {  // amx_matmul.cpp: the same matmul through AMX's tiles
bool usable(int64_t K);
void matmul(const uint16_t* X, const uint16_t* W, uint16_t* Y, int64_t M, int64_t K, int64_t n, int64_t tiles);
bool built();
}  // namespace chatsmith_amx

namespace {

constexpr int64_t BLOCK = 16;   // columns per vector of float32 accumulators
constexpr int NB = 4;           // blocks per tile: 64 columns
constexpr int MR = 4;           // rows per pass over a tile: 4 x 4 accumulators
constexpr int64_t ROWS = 64;    // rows per task: x's rows stay cached across the tiles

// Calls f(m, std::integral_constant<int, R>) for rows [m0, m1) in groups of R rows: MR at a
// time, then the 1-3 left over, so each kernel's row count is fixed when compiling.
template <class F>
inline void row_groups(int64_t m0, int64_t m1, F&& f) {
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) f(m, std::integral_constant<int, MR>{});
  switch (m1 - m) {
    case 3: f(m, std::integral_constant<int, 3>{}); break;
    case 2: f(m, std::integral_constant<int, 2>{}); break;
    case 1: f(m, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

// Calls f(m, R, tile) for every group of R rows of M (as row_groups) against every tile of
// columns. Tasks are a chunk of ROWS rows over consecutive tiles, so a thread reuses its
// rows of x and each tile's weights are read once per chunk.
template <class F>
inline void for_tiles(int64_t M, int64_t tiles, F&& f) {
  const int64_t chunks = (M + ROWS - 1) / ROWS;
  at::parallel_for(0, chunks * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t chunk = t / tiles, tile = t % tiles;
      row_groups(chunk * ROWS, std::min(M, (chunk + 1) * ROWS), [&](int64_t m, auto r) { f(m, r, tile); });
    }
  });
}

#ifdef CHATSMITH_BF16_MATMUL
// R rows of x (stride K) against one tile of packed weights -> R rows of 64 bf16 outputs,
// of which only the first `cols` are stored (the tile at N's end may be partly padding).
template <int R>
inline void tile_rows(const uint16_t* x, const uint16_t* w, int64_t K, uint16_t* y, int64_t ldy, int64_t cols) {
  __m512 acc[R][NB];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
  const int64_t block = (K / 2) * 2 * BLOCK;  // elements from one block of columns to the next
  for (int64_t kp = 0; kp < K / 2; kp++) {
    __m512bh b[NB];
    for (int j = 0; j < NB; j++) b[j] = (__m512bh)_mm512_loadu_si512(w + j * block + kp * 2 * BLOCK);
    for (int i = 0; i < R; i++) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(*reinterpret_cast<const int32_t*>(x + i * K + kp * 2));
      for (int j = 0; j < NB; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, b[j]);
    }
  }
  for (int j = 0; j < NB; j++) {
    const int64_t left = std::clamp<int64_t>(cols - j * BLOCK, 0, BLOCK);
    if (left == 0) break;
    const __mmask16 mask = left == BLOCK ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    for (int i = 0; i < R; i++)  // round to nearest even, as ATen's bf16 conversion does
      _mm256_mask_storeu_epi16(y + i * ldy + j * BLOCK, mask, (__m256i)_mm512_cvtneps_pbh(acc[i][j]));
  }
}
#endif

at::Tensor bf16_matmul(const at::Tensor& x, const at::Tensor& packed, int64_t n) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, "bf16_matmul: x must be (M, K) bf16");
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kBFloat16 && packed.size(3) == 2 &&
                  packed.size(2) == BLOCK && packed.is_contiguous(),
              "bf16_matmul: the weight must be packed by kernels/cpu/matmul.pack");
  const int64_t M = x.size(0), K = x.size(1), blocks = packed.size(0);
  TORCH_CHECK(packed.size(1) * 2 == K, "bf16_matmul: x has ", K, " columns, the packed weight ", packed.size(1) * 2);
  TORCH_CHECK(blocks % NB == 0 && n > blocks * BLOCK - NB * BLOCK && n <= blocks * BLOCK,
              "bf16_matmul: the packed weight does not hold ", n, " outputs in whole tiles");
  auto y = at::empty({M, n}, x.options());
#ifdef CHATSMITH_BF16_MATMUL
  if (M == 0) return y;
  const auto xc = x.contiguous();
  const auto* X = reinterpret_cast<const uint16_t*>(xc.const_data_ptr());
  const auto* W = reinterpret_cast<const uint16_t*>(packed.const_data_ptr());
  auto* Y = reinterpret_cast<uint16_t*>(y.data_ptr());
  if (chatsmith_amx::usable(K)) {  // chosen by K alone, never by M: see amx_matmul.cpp
    chatsmith_amx::matmul(X, W, Y, M, K, n, blocks / NB);
    return y;
  }
  for_tiles(M, blocks / NB, [&](int64_t m, auto r, int64_t tile) {
    const int64_t col = tile * NB * BLOCK, cols = std::min<int64_t>(NB * BLOCK, n - col);
    tile_rows<decltype(r)::value>(X + m * K, W + tile * NB * K * BLOCK, K, Y + m * n + col, n, cols);
  });
  return y;
#else
  TORCH_CHECK(false, "bf16_matmul: this build has no AVX512-BF16 (see kernels/cpu/matmul.available)");
  return y;
#endif
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#define CHATSMITH_F32_MATMUL 1
using Vec = at::vec::Vectorized<float>;
constexpr int VS = Vec::size();
constexpr int F32_NB = VS == 16 ? 4 : 2;  // vectors per tile: 4 x F32_NB accumulators fit the registers
#else
constexpr int VS = 0;
#endif
constexpr int64_t F32_ROWS = 8;

#ifdef CHATSMITH_F32_MATMUL
template <int R>
inline void f32_tile_rows(const float* x, const float* w, int64_t K, float* y, int64_t ldy, int64_t cols) {
  Vec acc[R][F32_NB];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < F32_NB; j++) acc[i][j] = Vec(0.f);
  for (int64_t k = 0; k < K; k++) {
    Vec b[F32_NB];
    for (int j = 0; j < F32_NB; j++) b[j] = Vec::loadu(w + (j * K + k) * VS);
    for (int i = 0; i < R; i++) {
      const Vec a(x[i * K + k]);
      for (int j = 0; j < F32_NB; j++) acc[i][j] = at::vec::fmadd(a, b[j], acc[i][j]);
    }
  }
  for (int j = 0; j < F32_NB; j++) {
    const int64_t left = std::clamp<int64_t>(cols - j * VS, 0, VS);
    if (left == 0) break;
    for (int i = 0; i < R; i++) acc[i][j].store(y + i * ldy + j * VS, static_cast<int>(left));
  }
}
#endif

at::Tensor f32_matmul(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "f32_matmul: x must be (M, K) float32");
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(1), "f32_matmul: x has ", x.size(1), " columns, w ", w.size(1));
  if (x.size(0) > F32_ROWS) return at::linear(x, w);  // not called so (matmul._one_row)
#ifdef CHATSMITH_F32_MATMUL
  const int64_t M = x.size(0), K = x.size(1), n = w.size(0), tile = F32_NB * VS;
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kFloat && packed.size(2) == VS &&
                  packed.size(1) == K && packed.is_contiguous() && packed.size(0) * VS % tile == 0 &&
                  n > packed.size(0) * VS - tile && n <= packed.size(0) * VS,
              "f32_matmul: the weight must be packed by kernels/cpu/matmul.pack");
  auto y = at::empty({M, n}, x.options());
  if (M == 0) return y;
  const auto xc = x.contiguous();
  const float* X = xc.const_data_ptr<float>();
  const float* W = packed.const_data_ptr<float>();
  float* Y = y.data_ptr<float>();
  for_tiles(M, packed.size(0) / F32_NB, [&](int64_t m, auto r, int64_t t) {  // M <= F32_ROWS: one chunk
    const int64_t col = t * tile, cols = std::min<int64_t>(tile, n - col);
    f32_tile_rows<decltype(r)::value>(X + m * K, W + t * F32_NB * K * VS, K, Y + m * n + col, n, cols);
  });
  return y;
#else
  TORCH_CHECK(false, "f32_matmul: this build has no AVX2 or AVX-512 (see kernels/cpu/matmul.f32_layout)");
  return x;
#endif
}

// The float32 packing: [floats per vector, columns per tile]; [0, 0] where it is not built.
std::vector<int64_t> f32_matmul_layout() {
#ifdef CHATSMITH_F32_MATMUL
  return {VS, F32_NB * VS};
#else
  return {0, 0};
#endif
}

// Which kernel bf16_matmul runs for an inner size K: "amx", "avx512_bf16", or "" (none built).
std::string bf16_matmul_kind(int64_t K) {
#ifdef CHATSMITH_BF16_MATMUL
  return chatsmith_amx::usable(K) ? "amx" : "avx512_bf16";
#else
  return "";
#endif
}

bool bf16_matmul_built() {
#ifdef CHATSMITH_BF16_MATMUL
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(chatsmith_cpu, m) {
  m.def("bf16_matmul(Tensor x, Tensor packed, int n) -> Tensor");
  m.def("bf16_matmul_built() -> bool", &bf16_matmul_built);
  m.def("bf16_matmul_kind(int K) -> str", &bf16_matmul_kind);
  m.def("f32_matmul(Tensor x, Tensor packed, Tensor w) -> Tensor");
  m.def("f32_matmul_layout() -> int[]", &f32_matmul_layout);
}

TORCH_LIBRARY_IMPL(chatsmith_cpu, CPU, m) {
  m.impl("bf16_matmul", &bf16_matmul);
  m.impl("f32_matmul", &f32_matmul);
}
