// Weight-only int8 matmul: y (M, N) = x (M, K) @ (q * scale).T, x in bf16 or float32, q int8
// with one scale per output column and group of G consecutive k (GGUF's Q8_0 has G = 32).
// See chatsmith/kernels/cpu/int8.py for why it exists and how the weight is quantized.
//
// The weight comes packed as (N' / VS, K, VS) int8, VS floats to a vector (16 on AVX-512, 8 on
// AVX2), N' = N rounded up to whole tiles with zero columns; the scales as (K / G, N'), bf16 or
// float32. A tile is NB vectors of columns; for each k the tile's NB x VS weights are widened
// to float32 and multiplied by their group's scales once (vpmovsxbd, vcvtdq2ps, vmulps), then
// into every row of a group of up to 4 rows, with 4 x NB float32 accumulators in registers,
// summed over k in order. Each output row is therefore summed the same way whatever M is: a
// row's result does not depend on which other rows share the call (as small_matmul.cpp's).
//
// At one row a decode step reads the weights once and does little arithmetic per byte, so
// half the bytes of bf16 is the point; at more rows the widening is shared by the rows.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#define CHATSMITH_INT8_MATMUL 1
#endif

namespace {

#ifdef CHATSMITH_INT8_MATMUL
#ifdef CPU_CAPABILITY_AVX512
using V = __m512;
constexpr int VS = 16;
constexpr int NB = 4;  // 4 rows x 4 vectors of accumulators + 4 of weights: within 32 registers
inline V zero() { return _mm512_setzero_ps(); }
inline V bcast(float a) { return _mm512_set1_ps(a); }
inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V widen(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline V load(const c10::BFloat16* p) {  // bf16 -> float32: the high half of each lane
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline void store(float* p, V v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
#else
using V = __m256;
constexpr int VS = 8;
constexpr int NB = 2;  // 4 rows x 2 vectors + 2 of weights: within 16 registers
inline V zero() { return _mm256_setzero_ps(); }
inline V bcast(float a) { return _mm256_set1_ps(a); }
inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V widen(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline V load(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void store(float* p, V v, int n) {
  alignas(32) float tmp[VS];
  _mm256_store_ps(tmp, v);
  std::copy(tmp, tmp + n, p);
}
#endif
constexpr int TILE = NB * VS;
#else
constexpr int VS = 0, NB = 1, TILE = 0;
#endif

constexpr int MR = 4;          // rows per pass over a tile
constexpr int64_t ROWS = 64;   // rows per task: x's rows stay cached across the tiles

#ifdef CHATSMITH_INT8_MATMUL
// The operands of one call; S (K / G, ld) the scales.
template <class ST>
struct Args {
  const float* X;
  const int8_t* W;
  const ST* S;
  float* Y;
  int64_t K, G, n, ld;
};

// R rows of x (float32) from row m against the tile of packed weights from column col ->
// R rows of y, of which the first `cols` columns are stored.
template <int R, class ST>
inline void tile_rows(const Args<ST>& a, int64_t m, int64_t col, int64_t cols) {
  const float* x = a.X + m * a.K;
  const int8_t* w = a.W + col * a.K;
  const int64_t K = a.K;
  V acc[R][NB];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = zero();
  for (int64_t k0 = 0; k0 < K; k0 += a.G) {
    V s[NB];
    for (int j = 0; j < NB; j++) s[j] = load(a.S + (k0 / a.G) * a.ld + col + j * VS);
    for (int64_t k = k0; k < k0 + a.G; k++) {
      V b[NB];
      for (int j = 0; j < NB; j++) b[j] = mul(widen(w + (j * K + k) * VS), s[j]);
      for (int i = 0; i < R; i++) {
        const V xv = bcast(x[i * K + k]);
        for (int j = 0; j < NB; j++) acc[i][j] = fma(xv, b[j], acc[i][j]);
      }
    }
  }
  for (int j = 0; j < NB; j++) {
    const int64_t left = std::clamp<int64_t>(cols - j * VS, 0, VS);
    if (left == 0) break;
    for (int i = 0; i < R; i++) store(a.Y + (m + i) * a.n + col + j * VS, acc[i][j], static_cast<int>(left));
  }
}

// Rows [m0, m1) against one tile, MR at a time, then the 1-3 left over.
template <class ST>
inline void tile_all_rows(const Args<ST>& a, int64_t m0, int64_t m1, int64_t col) {
  const int64_t cols = std::min<int64_t>(TILE, a.n - col);
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) tile_rows<MR>(a, m, col, cols);
  switch (m1 - m) {
    case 3: tile_rows<3>(a, m, col, cols); break;
    case 2: tile_rows<2>(a, m, col, cols); break;
    case 1: tile_rows<1>(a, m, col, cols); break;
    default: break;
  }
}

template <class ST>
void run(const Args<ST>& a, int64_t M, int64_t tiles) {
  const int64_t chunks = (M + ROWS - 1) / ROWS;
  at::parallel_for(0, chunks * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t chunk = t / tiles;
      tile_all_rows(a, chunk * ROWS, std::min(M, (chunk + 1) * ROWS), (t % tiles) * TILE);
    }
  });
}
#endif

at::Tensor int8_matmul(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t n) {
  TORCH_CHECK(x.dim() == 2 && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat),
              "int8_matmul: x must be (M, K) bf16 or float32");
#ifdef CHATSMITH_INT8_MATMUL
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kChar && packed.size(2) == VS &&
                  packed.size(1) == K && packed.is_contiguous() && packed.size(0) % NB == 0,
              "int8_matmul: the weight must be packed by kernels/cpu/int8.pack");
  const int64_t padded = packed.size(0) * VS, tiles = padded / TILE;
  TORCH_CHECK(n > padded - TILE && n <= padded, "int8_matmul: the packed weight does not hold ", n, " outputs");
  TORCH_CHECK(scale.dim() == 2 && scale.size(1) == padded && scale.size(0) > 0 && K % scale.size(0) == 0 &&
                  scale.is_contiguous() &&
                  (scale.scalar_type() == at::kBFloat16 || scale.scalar_type() == at::kFloat),
              "int8_matmul: scales (K / G, packed columns) in bf16 or float32 expected");
  const auto xf = x.to(at::kFloat).contiguous();
  auto y = at::empty({M, n}, x.options().dtype(at::kFloat));
  if (M == 0) return y.to(x.scalar_type());
  const float* X = xf.const_data_ptr<float>();
  const int8_t* W = packed.const_data_ptr<int8_t>();
  const int64_t G = K / scale.size(0);
  if (scale.scalar_type() == at::kFloat)
    run(Args<float>{X, W, scale.const_data_ptr<float>(), y.data_ptr<float>(), K, G, n, padded}, M, tiles);
  else
    run(Args<c10::BFloat16>{X, W, scale.const_data_ptr<c10::BFloat16>(), y.data_ptr<float>(), K, G, n, padded}, M,
        tiles);
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
#else
  TORCH_CHECK(false, "int8_matmul: this build has no AVX2 or AVX-512 (see kernels/cpu/int8.layout)");
  return x;
#endif
}

// The packing: [floats per vector, columns per tile]; [0, 0] where the kernel is not built.
std::vector<int64_t> int8_matmul_layout() {
#ifdef CHATSMITH_INT8_MATMUL
  return {VS, TILE};
#else
  return {0, 0};
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(chatsmith_cpu, m) {
  m.def("int8_matmul(Tensor x, Tensor packed, Tensor scale, int n) -> Tensor");
  m.def("int8_matmul_layout() -> int[]", &int8_matmul_layout);
}

TORCH_LIBRARY_IMPL(chatsmith_cpu, CPU, m) { m.impl("int8_matmul", &int8_matmul); }
