// One decode step's attention on CPUs: each sequence's new query against the keys its
// slot holds (positions < pos[b]) and its own new key, in one float32 softmax.
//
// Work is split by (sequence, kv head): the keys and values of one such pair are read once,
// for every query head that shares them, as rows of D contiguous numbers. Scores, softmax
// and the weighted sum of values stay in float32 registers and a small per-thread buffer;
// only the output is written. See chatsmith/model/decode_attention.py for why.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
using BVec = at::vec::Vectorized<c10::BFloat16>;
constexpr int VS = Vec::size();
static_assert(BVec::size() == 2 * VS && VS <= 16, "a bf16 vector converts into two float vectors");

// Each row is D = NV * VS numbers, loaded as NV float vectors.
template <int NV>
inline void load(const float* p, Vec* out) {
  for (int i = 0; i < NV; i++) out[i] = Vec::loadu(p + i * VS);
}

// A bf16 vector holds two float vectors' worth; an odd last one is loaded half full.
template <int NV>
inline void load(const c10::BFloat16* p, Vec* out) {
  for (int i = 0; i + 1 < NV; i += 2) {
    auto [a, b] = at::vec::convert_to_float<c10::BFloat16>(BVec::loadu(p + i * VS));
    out[i] = a;
    out[i + 1] = b;
  }
  if constexpr (NV % 2 == 1) out[NV - 1] = std::get<0>(at::vec::convert_to_float<c10::BFloat16>(BVec::loadu(p + (NV - 1) * VS, VS)));
}

template <int NV>
inline void store(float* p, const Vec* in) {
  for (int i = 0; i < NV; i++) in[i].store(p + i * VS);
}

template <int NV>
inline void store(c10::BFloat16* p, const Vec* in) {
  for (int i = 0; i + 1 < NV; i += 2) at::vec::convert_from_float<c10::BFloat16>(in[i], in[i + 1]).store(p + i * VS);
  if constexpr (NV % 2 == 1) at::vec::convert_from_float<c10::BFloat16>(in[NV - 1], Vec(0.0f)).store(p + (NV - 1) * VS, VS);
}

template <int NV>
inline float dot(const Vec* a, const Vec* b) {
  Vec acc = a[0] * b[0];
  for (int i = 1; i < NV; i++) acc = at::vec::fmadd(a[i], b[i], acc);
  return at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
}

template <typename T, int D>
inline void prefetch_row(const T* p) {
  for (int i = 0; i < D * int(sizeof(T)); i += 64) __builtin_prefetch(reinterpret_cast<const char*>(p) + i);
}

// Ask for all the keys and values of the next task (into L2) before working on this one.
// Inside a decode step the cache is rarely still in L3 (the weights ran through it since
// the last step), and each task's rows are short runs that the hardware prefetcher only
// picks up late: without this the kernel waits on memory at a fraction of its bandwidth.
// A whole task ahead is the distance that paid (about a tenth off the 32-sequence step).
template <typename T, int D>
inline void prefetch_task(const T* K, const T* V, const int64_t* sK, const int64_t* sV, const int64_t* pos,
                          int64_t G, int64_t task, int64_t end) {
  if (task >= end) return;
  const int64_t b = task / G, g = task % G;
  const char* k = reinterpret_cast<const char*>(K + b * sK[0] + g * sK[1]);
  const char* v = reinterpret_cast<const char*>(V + b * sV[0] + g * sV[1]);
  const int64_t row_k = sK[2] * int64_t(sizeof(T)), row_v = sV[2] * int64_t(sizeof(T));
  for (int64_t l = 0; l < pos[b]; l++)
    for (int i = 0; i < D * int(sizeof(T)); i += 64) {
      __builtin_prefetch(k + l * row_k + i, 0, 2);
      __builtin_prefetch(v + l * row_v + i, 0, 2);
    }
}

#if defined(CPU_CAPABILITY_AVX512)
// The 16 horizontal sums of v[0..15], as one vector: lane j holds the sum of v[j]'s lanes.
inline Vec sum16(const Vec* v) {
  __m512 w[8], x[4];
  for (int k = 0; k < 8; k++)  // per 128-bit lane: pairwise sums of v[2k] and v[2k+1]
    w[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; k++) {  // per 128-bit lane: [sum v[4k], v[4k+1], v[4k+2], v[4k+3]]
    const __m512d a = _mm512_castps_pd(w[2 * k]), b = _mm512_castps_pd(w[2 * k + 1]);
    x[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // Add the four 128-bit lanes of each x[k] together, keeping the keys in order.
  const __m512 y0 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x88), _mm512_shuffle_f32x4(x[0], x[1], 0xDD));
  const __m512 y1 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], 0x88), _mm512_shuffle_f32x4(x[2], x[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y0, y1, 0x88), _mm512_shuffle_f32x4(y0, y1, 0xDD));
}
#endif

// Tasks per thread: chunks of at least ~2k key rows each; below that, waking a second
// thread costs more than it saves.
inline int64_t grain(const int64_t* pos, int64_t n) {
  int64_t longest = 0;
  for (int64_t b = 0; b < n; b++) longest = std::max(longest, pos[b]);
  return std::max<int64_t>(1, 2048 / (longest + 1));
}

// Softmax of nr rows of `len` scores (row r at scores + r * stride), in place, unnormalised:
// inv[r] is the factor that normalises row r.
inline void softmax_rows(float* scores, int64_t nr, int64_t stride, int64_t len, float* inv) {
  for (int64_t r = 0; r < nr; r++) {
    float* s = scores + r * stride;
    const float m = at::vec::reduce_all<float>([](Vec& a, Vec& c) { return at::vec::maximum(a, c); }, s, len);
    at::vec::map<float>([m](Vec x) { return (x - Vec(m)).exp_u20(); }, s, s, len);
    inv[r] = 1.0f / at::vec::reduce_all<float>([](Vec& a, Vec& c) { return a + c; }, s, len);
  }
}

// R query heads share one kv head; at most MAX_R of them are handled per pass over the keys.
constexpr int MAX_R = 8;

template <typename T, int NV>
void attend(const T* q, const T* k_new, const T* v_new, const T* K, const T* V, const int64_t* pos,
            T* y, int64_t n, int64_t H, int64_t G, const int64_t* sK, const int64_t* sV, int64_t M,
            float scale) {
  constexpr int D = NV * VS;
  const int64_t R = H / G;
  at::parallel_for(0, n * G, grain(pos, n), [&](int64_t begin, int64_t end) {
    std::vector<float> scores(MAX_R * (M + 1));
    for (int64_t task = begin; task < end; task++) {
      const int64_t b = task / G, g = task % G, L = pos[b];
      const T* Kb = K + b * sK[0] + g * sK[1];
      const T* Vb = V + b * sV[0] + g * sV[1];
      prefetch_task<T, D>(K, V, sK, sV, pos, G, task + 1, end);
      for (int64_t r0 = 0; r0 < R; r0 += MAX_R) {
        const int64_t nr = std::min<int64_t>(MAX_R, R - r0);
        const int64_t h0 = g * R + r0;
        Vec qv[MAX_R][NV];
        for (int64_t r = 0; r < nr; r++) {
          load<NV>(q + (b * H + h0 + r) * D, qv[r]);
          for (int i = 0; i < NV; i++) qv[r][i] = qv[r][i] * Vec(scale);
        }
        // Scores: row r holds the L cached keys, then the sequence's own new key.
        Vec kv[NV];
        int64_t l = 0;
#if defined(CPU_CAPABILITY_AVX512)
        // 16 keys at a time: their 16 product vectors are summed in one transposing tree,
        // three shuffles and adds per key instead of a full horizontal sum each.
        for (; l + 16 <= L; l += 16) {
          for (int j = 0; j < 16; j++) {
            prefetch_row<T, D>(Vb + (l + j) * sV[2]);  // read after the softmax
            prefetch_row<T, D>(Kb + (l + j + 16) * sK[2]);
          }
          for (int64_t r = 0; r < nr; r++) {  // a second head reads the 16 rows from L1
            Vec prod[16];
            for (int j = 0; j < 16; j++) {
              load<NV>(Kb + (l + j) * sK[2], kv);
              Vec acc = qv[r][0] * kv[0];
              for (int i = 1; i < NV; i++) acc = at::vec::fmadd(qv[r][i], kv[i], acc);
              prod[j] = acc;
            }
            sum16(prod).store(scores.data() + r * (M + 1) + l);
          }
        }
#endif
        for (; l < L; l++) {
          prefetch_row<T, D>(Vb + l * sV[2]);
          prefetch_row<T, D>(Kb + (l + 16) * sK[2]);
          load<NV>(Kb + l * sK[2], kv);
          for (int64_t r = 0; r < nr; r++) scores[r * (M + 1) + l] = dot<NV>(qv[r], kv);
        }
        load<NV>(k_new + (b * G + g) * D, kv);
        for (int64_t r = 0; r < nr; r++) scores[r * (M + 1) + L] = dot<NV>(qv[r], kv);
        float inv[MAX_R];
        softmax_rows(scores.data(), nr, M + 1, L + 1, inv);
        // Weighted sum of the values; two accumulators per row so the FMAs overlap.
        Vec acc[MAX_R][2][NV];
        for (int64_t r = 0; r < nr; r++)
          for (int j = 0; j < 2; j++)
            for (int i = 0; i < NV; i++) acc[r][j][i] = Vec(0.0f);
        Vec vv[2][NV];
        l = 0;
        for (; l + 1 < L; l += 2) {
          load<NV>(Vb + l * sV[2], vv[0]);
          load<NV>(Vb + (l + 1) * sV[2], vv[1]);
          for (int64_t r = 0; r < nr; r++) {
            const float* s = scores.data() + r * (M + 1);
            const Vec p0(s[l]), p1(s[l + 1]);
            for (int i = 0; i < NV; i++) {
              acc[r][0][i] = at::vec::fmadd(p0, vv[0][i], acc[r][0][i]);
              acc[r][1][i] = at::vec::fmadd(p1, vv[1][i], acc[r][1][i]);
            }
          }
        }
        for (; l <= L; l++) {  // the odd cached row, then the new value at l == L
          load<NV>(l < L ? Vb + l * sV[2] : v_new + (b * G + g) * D, vv[0]);
          for (int64_t r = 0; r < nr; r++) {
            const Vec p(scores[r * (M + 1) + l]);
            for (int i = 0; i < NV; i++) acc[r][0][i] = at::vec::fmadd(p, vv[0][i], acc[r][0][i]);
          }
        }
        for (int64_t r = 0; r < nr; r++) {
          Vec out[NV];
          for (int i = 0; i < NV; i++) out[i] = (acc[r][0][i] + acc[r][1][i]) * Vec(inv[r]);
          store<NV>(y + (b * H + h0 + r) * D, out);
        }
      }
    }
  });
}

#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
// bf16 caches on CPUs with AVX512-BF16 (built with -mavx512bf16 where the CPU has it).
// The generic loop above spends most of its instructions widening bf16 rows to float32;
// here a key row is scored straight from bf16 (vdpbf16ps: 32 products summed in pairs into
// float32 lanes, exact products) and a value row widens with one shift and one mask, which
// split it into its even and odd numbers instead of converting it in order. Scores,
// softmax and the weighted sum stay float32, as above; about half the work per key.
template <int NB>  // head_dim = 32 * NB: a row is NB vectors of 32 bf16
void attend_bf16(const c10::BFloat16* q, const c10::BFloat16* k_new, const c10::BFloat16* v_new,
                 const c10::BFloat16* K, const c10::BFloat16* V, const int64_t* pos, c10::BFloat16* y,
                 int64_t n, int64_t H, int64_t G, const int64_t* sK, const int64_t* sV, int64_t M,
                 float scale) {
  constexpr int D = 32 * NB;
  const int64_t R = H / G;
  at::parallel_for(0, n * G, grain(pos, n), [&](int64_t begin, int64_t end) {
    std::vector<float> scores(MAX_R * (M + 1));
    const __m512i high = _mm512_set1_epi32(int32_t(0xFFFF0000u));
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t task = begin; task < end; task++) {
      const int64_t b = task / G, g = task % G, L = pos[b];
      const c10::BFloat16* Kb = K + b * sK[0] + g * sK[1];
      const c10::BFloat16* Vb = V + b * sV[0] + g * sV[1];
      prefetch_task<c10::BFloat16, D>(K, V, sK, sV, pos, G, task + 1, end);
      for (int64_t r0 = 0; r0 < R; r0 += MAX_R) {
        const int64_t nr = std::min<int64_t>(MAX_R, R - r0);
        const int64_t h0 = g * R + r0;
        __m512bh qv[MAX_R][NB];
        for (int64_t r = 0; r < nr; r++)
          for (int i = 0; i < NB; i++) qv[r][i] = (__m512bh)_mm512_loadu_si512(q + (b * H + h0 + r) * D + 32 * i);
        // The lane sums of this vector are q_r . row.
        auto dot = [&](const c10::BFloat16* row, int64_t r) {
          __m512 acc = _mm512_setzero_ps();
          for (int i = 0; i < NB; i++) acc = _mm512_dpbf16_ps(acc, qv[r][i], (__m512bh)_mm512_loadu_si512(row + 32 * i));
          return acc;
        };
        int64_t l = 0;
        for (; l + 16 <= L; l += 16) {
          for (int j = 0; j < 16; j++) {
            prefetch_row<c10::BFloat16, D>(Vb + (l + j) * sV[2]);
            prefetch_row<c10::BFloat16, D>(Kb + (l + j + 16) * sK[2]);
          }
          for (int64_t r = 0; r < nr; r++) {
            Vec prod[16];
            for (int j = 0; j < 16; j++) prod[j] = dot(Kb + (l + j) * sK[2], r);
            _mm512_storeu_ps(scores.data() + r * (M + 1) + l, _mm512_mul_ps(sum16(prod), vscale));
          }
        }
        for (; l < L; l++) {
          prefetch_row<c10::BFloat16, D>(Vb + l * sV[2]);
          for (int64_t r = 0; r < nr; r++) scores[r * (M + 1) + l] = _mm512_reduce_add_ps(dot(Kb + l * sK[2], r)) * scale;
        }
        for (int64_t r = 0; r < nr; r++)
          scores[r * (M + 1) + L] = _mm512_reduce_add_ps(dot(k_new + (b * G + g) * D, r)) * scale;
        float inv[MAX_R];
        softmax_rows(scores.data(), nr, M + 1, L + 1, inv);
        // A value row as float32: its even-numbered entries (the low halves of each 32-bit
        // lane, shifted up) and its odd ones (the high halves, masked), NB vectors each.
        auto widen = [&](const c10::BFloat16* row, __m512* even, __m512* odd) {
          for (int i = 0; i < NB; i++) {
            const __m512i x = _mm512_loadu_si512(row + 32 * i);
            even[i] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
            odd[i] = _mm512_castsi512_ps(_mm512_and_si512(x, high));
          }
        };
        // acc[r][u][p][i]: row r, two rows in flight (u), even/odd (p), vector i.
        __m512 acc[MAX_R][2][2][NB];
        for (int64_t r = 0; r < nr; r++)
          for (int u = 0; u < 2; u++)
            for (int p = 0; p < 2; p++)
              for (int i = 0; i < NB; i++) acc[r][u][p][i] = _mm512_setzero_ps();
        __m512 ev[2][NB], od[2][NB];
        l = 0;
        for (; l + 1 < L; l += 2) {
          widen(Vb + l * sV[2], ev[0], od[0]);
          widen(Vb + (l + 1) * sV[2], ev[1], od[1]);
          for (int64_t r = 0; r < nr; r++) {
            const float* s = scores.data() + r * (M + 1);
            for (int u = 0; u < 2; u++) {
              const __m512 p = _mm512_set1_ps(s[l + u]);
              for (int i = 0; i < NB; i++) {
                acc[r][u][0][i] = _mm512_fmadd_ps(p, ev[u][i], acc[r][u][0][i]);
                acc[r][u][1][i] = _mm512_fmadd_ps(p, od[u][i], acc[r][u][1][i]);
              }
            }
          }
        }
        for (; l <= L; l++) {  // the odd cached row, then the new value at l == L
          widen(l < L ? Vb + l * sV[2] : v_new + (b * G + g) * D, ev[0], od[0]);
          for (int64_t r = 0; r < nr; r++) {
            const __m512 p = _mm512_set1_ps(scores[r * (M + 1) + l]);
            for (int i = 0; i < NB; i++) {
              acc[r][0][0][i] = _mm512_fmadd_ps(p, ev[0][i], acc[r][0][0][i]);
              acc[r][0][1][i] = _mm512_fmadd_ps(p, od[0][i], acc[r][0][1][i]);
            }
          }
        }
        for (int64_t r = 0; r < nr; r++) {
          const __m512 w = _mm512_set1_ps(inv[r]);
          alignas(64) float parts[2][16];
          alignas(64) float row[D];  // back in order: entry 32i + 2j + p
          for (int i = 0; i < NB; i++) {
            for (int p = 0; p < 2; p++)
              _mm512_store_ps(parts[p], _mm512_mul_ps(_mm512_add_ps(acc[r][0][p][i], acc[r][1][p][i]), w));
            for (int j = 0; j < 16; j++) {
              row[32 * i + 2 * j] = parts[0][j];
              row[32 * i + 2 * j + 1] = parts[1][j];
            }
          }
          Vec out[2 * NB];
          load<2 * NB>(row, out);
          store<2 * NB>(y + (b * H + h0 + r) * D, out);
        }
      }
    }
  });
}
#endif

template <typename T>
void dispatch_d(int64_t D, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                const at::Tensor& K, const at::Tensor& V, const at::Tensor& pos, at::Tensor& y,
                double scale) {
  const int64_t n = q.size(0), H = q.size(1), G = K.size(1), M = K.size(2);
  const int64_t sK[3] = {K.stride(0), K.stride(1), K.stride(2)};
  const int64_t sV[3] = {V.stride(0), V.stride(1), V.stride(2)};
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    auto bf = [&](auto nb) {
      attend_bf16<decltype(nb)::value>(q.const_data_ptr<T>(), k_new.const_data_ptr<T>(), v_new.const_data_ptr<T>(),
                                       K.const_data_ptr<T>(), V.const_data_ptr<T>(), pos.const_data_ptr<int64_t>(),
                                       y.mutable_data_ptr<T>(), n, H, G, sK, sV, M, static_cast<float>(scale));
    };
    switch (D) {  // whole 32-number vectors; 16 takes the generic loop
      case 32: return bf(std::integral_constant<int, 1>{});
      case 64: return bf(std::integral_constant<int, 2>{});
      case 128: return bf(std::integral_constant<int, 4>{});
      case 256: return bf(std::integral_constant<int, 8>{});
    }
  }
#endif
  auto go = [&](auto nv) {
    attend<T, decltype(nv)::value>(q.const_data_ptr<T>(), k_new.const_data_ptr<T>(), v_new.const_data_ptr<T>(),
                                   K.const_data_ptr<T>(), V.const_data_ptr<T>(), pos.const_data_ptr<int64_t>(),
                                   y.mutable_data_ptr<T>(), n, H, G, sK, sV, M, static_cast<float>(scale));
  };
  switch (D / VS) {  // the head sizes of decode_attention.HEAD_DIMS, at 8 or 16 floats a vector
    case 1: return go(std::integral_constant<int, 1>{});
    case 2: return go(std::integral_constant<int, 2>{});
    case 4: return go(std::integral_constant<int, 4>{});
    case 8: return go(std::integral_constant<int, 8>{});
    case 16: return go(std::integral_constant<int, 16>{});
    case 32: return go(std::integral_constant<int, 32>{});
  }
  TORCH_CHECK(false, "decode_attention: head_dim ", D, " is not supported");
}

// q (n, H, D); k_new, v_new (n, G, D); k_cache, v_cache (slots, G, max_len, D) with their
// last dimension contiguous; pos (n,) int64, each sequence's cached length -> y (n, H, D).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                            const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& pos,
                            double scale) {
  TORCH_CHECK(q.dim() == 3 && k_new.dim() == 3 && v_new.dim() == 3, "decode_attention: q, k_new, v_new are (n, heads, D)");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.dim() == 4, "decode_attention: the caches are (slots, G, max_len, D)");
  const int64_t n = q.size(0), H = q.size(1), D = q.size(2), G = k_cache.size(1);
  TORCH_CHECK(k_new.size(0) == n && k_new.size(1) == G && k_new.size(2) == D && v_new.sizes() == k_new.sizes(),
              "decode_attention: k_new and v_new must be (n, G, D)");
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes() && k_cache.size(3) == D && k_cache.size(0) >= n,
              "decode_attention: the caches must be (slots >= n, G, max_len, D)");
  TORCH_CHECK(H % G == 0, "decode_attention: ", H, " query heads cannot share ", G, " kv heads");
  TORCH_CHECK(k_cache.stride(3) == 1 && v_cache.stride(3) == 1, "decode_attention: cache rows must be contiguous");
  const auto dt = k_cache.scalar_type();
  TORCH_CHECK(q.scalar_type() == dt && k_new.scalar_type() == dt && v_new.scalar_type() == dt && v_cache.scalar_type() == dt,
              "decode_attention: q, k_new, v_new and the caches must share one dtype");
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "decode_attention: float32 or bfloat16 only");
  TORCH_CHECK(D % VS == 0, "decode_attention: head_dim must be a multiple of ", VS);
  TORCH_CHECK(pos.dim() == 1 && pos.size(0) == n && pos.scalar_type() == at::kLong, "decode_attention: pos is (n,) int64");
  const auto qc = q.contiguous(), kc = k_new.contiguous(), vc = v_new.contiguous(), pc = pos.contiguous();
  const int64_t M = k_cache.size(2);
  const int64_t* p = pc.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < n; b++)
    TORCH_CHECK(p[b] >= 0 && p[b] < M, "decode_attention: position ", p[b], " outside a cache of ", M);
  at::Tensor y = at::empty({n, H, D}, q.options());
  if (dt == at::kFloat)
    dispatch_d<float>(D, qc, kc, vc, k_cache, v_cache, pc, y, scale);
  else
    dispatch_d<c10::BFloat16>(D, qc, kc, vc, k_cache, v_cache, pc, y, scale);
  return y;
}

// A packed prefill's attention: q (H, T, D), k, v (G, T, D) hold S prompts one after
// another (lens[s] tokens each); prompt s attends causally over its own new keys, after
// the first past[s] positions its slot already holds in the caches (slots, G, max_len, D).
// The loop over prompts runs here, not in Python: one SDPA call per prompt at about the cost
// of the call itself. The caches are read only; the caller stores k and v.
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slots,
                             const at::Tensor& past, const at::Tensor& lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.sizes() == v.sizes(),
              "prefill_attention: q is (H, T, D), k and v (G, T, D)");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "prefill_attention: the caches are (slots, G, max_len, D)");
  const int64_t H = q.size(0), T = q.size(1), G = k.size(0);
  TORCH_CHECK(k.size(1) == T && k_cache.size(1) == G && H % G == 0, "prefill_attention: mismatched heads or lengths");
  TORCH_CHECK(slots.dim() == 1 && past.sizes() == slots.sizes() && lens.sizes() == slots.sizes() &&
                  slots.scalar_type() == at::kLong && past.scalar_type() == at::kLong && lens.scalar_type() == at::kLong,
              "prefill_attention: slots, past and lens are (S,) int64");
  const auto sl = slots.contiguous(), pa = past.contiguous(), le = lens.contiguous();
  const int64_t *slot = sl.const_data_ptr<int64_t>(), *P = pa.const_data_ptr<int64_t>(), *n = le.const_data_ptr<int64_t>();
  at::Tensor y = at::empty({H, T, q.size(2)}, q.options());
  int64_t at = 0;
  for (int64_t s = 0; s < sl.numel(); s++) {
    TORCH_CHECK(n[s] > 0 && at + n[s] <= T, "prefill_attention: the prompt lengths do not add up to ", T);
    TORCH_CHECK(slot[s] >= 0 && slot[s] < k_cache.size(0) && P[s] >= 0 && P[s] + n[s] <= k_cache.size(2),
                "prefill_attention: prompt ", s, " does not fit its slot");
    at::Tensor ks = k.narrow(1, at, n[s]), vs = v.narrow(1, at, n[s]);
    std::optional<at::Tensor> mask;
    if (P[s] > 0) {  // after a reused prefix: its keys first, and the causal mask shifted by it
      ks = at::cat({k_cache[slot[s]].narrow(1, 0, P[s]), ks}, 1);
      vs = at::cat({v_cache[slot[s]].narrow(1, 0, P[s]), vs}, 1);
      mask = at::ones({n[s], P[s] + n[s]}, q.options().dtype(at::kBool)).tril(P[s]);
    }
    const at::Tensor out = at::scaled_dot_product_attention(q.narrow(1, at, n[s]).unsqueeze(0), ks.unsqueeze(0),
                                                            vs.unsqueeze(0), mask, 0.0, !mask.has_value(), scale, H != G);
    y.narrow(1, at, n[s]).copy_(out[0]);
    at += n[s];
  }
  TORCH_CHECK(at == T, "prefill_attention: the prompt lengths do not add up to ", T);
  return y;
}

}  // namespace

TORCH_LIBRARY(chatsmith_cpu, m) {
  m.def("decode_attention(Tensor q, Tensor k_new, Tensor v_new, Tensor k_cache, Tensor v_cache, Tensor pos, float scale) -> Tensor");
  m.def("prefill_attention(Tensor q, Tensor k, Tensor v, Tensor k_cache, Tensor v_cache, Tensor slots, Tensor past, Tensor lens, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(chatsmith_cpu, CPU, m) {
  m.impl("decode_attention", &decode_attention);
  m.impl("prefill_attention", &prefill_attention);
}
