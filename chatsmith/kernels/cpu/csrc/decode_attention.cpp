// One decode step's attention on CPUs: each sequence's new query against the keys its
// slot holds (positions < pos[b]) and its own new key, in one float32 softmax.
//
// The caches are (slots, max_len, G, D): a position's keys of all kv heads are one run of
// G * D numbers, so a sequence's keys and values are two runs read in order. Work is split
// by sequence (or, for fewer sequences than threads on a long context, by its kv heads):
// scores, one float32 softmax per head, then the values, each run read position by
// position, all of a task's heads of a position before the next. Only the output is
// written. See chatsmith/kernels/cpu/ops.py for why.
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
#include <cstring>
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

#if defined(CPU_CAPABILITY_AVX512)
// The 16 horizontal sums of v[0..15], as one vector: lane j holds the sum of v[j]'s lanes.
// Always inlined: out of line (as gcc left it once the kernel's loop became a function of its
// own, attend_runs_bf16) the 16 vectors went through memory, and a decode call took 5-7 % longer.
__attribute__((always_inline)) inline Vec sum16(const Vec* v) {
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

// The stride of the per-query-head rows of scores: a head's cached positions and its own new
// key, rounded up to whole 64-byte lines so that no two heads' rows share one.
inline int64_t score_stride(int64_t longest) { return (longest + 16) / 16 * 16; }

// Per query head i of a task, the offset of its kv head's row within a position: i / R
// kv heads along, `head` numbers apart.
inline std::vector<int64_t> head_offsets(int64_t QH, int64_t R, int64_t head) {
  std::vector<int64_t> off(QH);
  for (int64_t i = 0; i < QH; i++) off[i] = i / R * head;
  return off;
}

// How the work is cut: a task is one sequence's kv heads [g0, g0 + heads): all of them,
// unless fewer sequences than threads decode a long context. A thread's chunk of tasks
// holds at least ~2k key rows: below that, waking a second thread costs more than it saves.
struct Split {
  int64_t parts, heads, grain, longest;
};

inline Split split_tasks(const int64_t* pos, int64_t n, int64_t G) {
  int64_t longest = 0;
  for (int64_t b = 0; b < n; b++) longest = std::max(longest, pos[b]);
  int64_t parts = 1;
  const int64_t threads = at::get_num_threads();
  if (n < threads && (longest + 1) * G >= 1024 * threads) {  // few sequences, long enough to share
    parts = std::min<int64_t>(G, (threads + n - 1) / n);
    while (G % parts) parts++;
  }
  const int64_t heads = G / parts;
  return {parts, heads, std::max<int64_t>(1, 2048 / ((longest + 1) * heads)), longest};
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

// The generic kernel: float32 or bf16 caches (bf16 widened to float32 row by row), any
// vector width. In the same order as the bf16 kernel below: a task's keys position by
// position, all its heads of a position before the next (16 products summed in one tree on
// AVX-512), one float32 softmax per query head, then its values position by position with
// up to HC heads' sums in registers.
template <typename T, int NV>
void attend(const T* q, const T* k_new, const T* v_new, const T* K, const T* V, const int64_t* pos,
            T* y, int64_t n, int64_t H, int64_t G, const int64_t* sK, const int64_t* sV, const int64_t* sN,
            float scale) {
  constexpr int D = NV * VS;
  constexpr int HC = NV >= 8 ? 1 : 8 / NV;  // heads per pass over the values: HC * NV accumulators
  const int64_t R = H / G;
  const Split sp = split_tasks(pos, n, G);
  const int64_t QH = sp.heads * R, S = score_stride(sp.longest);
  at::parallel_for(0, n * sp.parts, sp.grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(QH * S), inv(QH);  // query head i's scores at scores[i * S]
    std::vector<Vec> qv(QH * NV);
    const auto koff = head_offsets(QH, R, sK[2]), voff = head_offsets(QH, R, sV[2]), noff = head_offsets(QH, R, D);
    float* sc = scores.data();
    for (int64_t task = begin; task < end; task++) {
      const int64_t b = task / sp.parts, g0 = task % sp.parts * sp.heads, h0 = g0 * R, L = pos[b];
      const T* kb = K + b * sK[0] + g0 * sK[2];
      const T* vb = V + b * sV[0] + g0 * sV[2];
      const T* kn = k_new + b * sN[0] + g0 * D;
      const T* vn = v_new + b * sN[1] + g0 * D;
      for (int64_t i = 0; i < QH; i++) {
        load<NV>(q + (b * H + h0 + i) * D, qv.data() + i * NV);
        for (int k = 0; k < NV; k++) qv[i * NV + k] = qv[i * NV + k] * Vec(scale);
      }
      int64_t l = 0, i = 0;
#if defined(CPU_CAPABILITY_AVX512)
      for (int64_t t = 0; t + 16 <= L * QH; t += 16) {  // (position, head) pairs in reading order
        const int64_t l0 = l, i0 = i;
        Vec prod[16], kv[NV];
        for (int j = 0; j < 16; j++) {
          load<NV>(kb + l * sK[1] + koff[i], kv);
          const Vec* qi = qv.data() + i * NV;
          Vec a = qi[0] * kv[0];
          for (int k = 1; k < NV; k++) a = at::vec::fmadd(qi[k], kv[k], a);
          prod[j] = a;
          if (++i == QH) i = 0, l++;
        }
        alignas(64) float tmp[16];
        sum16(prod).store(tmp);
        for (int64_t j = 0, ii = i0, ll = l0; j < 16; j++) {
          sc[ii * S + ll] = tmp[j];
          if (++ii == QH) ii = 0, ll++;
        }
      }
#endif
      for (; l < L;) {
        Vec kv[NV];
        load<NV>(kb + l * sK[1] + koff[i], kv);
        sc[i * S + l] = dot<NV>(qv.data() + i * NV, kv);
        if (++i == QH) i = 0, l++;
      }
      for (int64_t h = 0; h < QH; h++) {  // the sequence's own new key
        Vec kv[NV];
        load<NV>(kn + noff[h], kv);
        sc[h * S + L] = dot<NV>(qv.data() + h * NV, kv);
      }
      softmax_rows(sc, QH, S, L + 1, inv.data());
      for (int64_t h = 0; h < QH; h += HC) {
        const int64_t hc = std::min<int64_t>(HC, QH - h);
        Vec a[HC][NV];
        for (int i = 0; i < HC; i++)
          for (int k = 0; k < NV; k++) a[i][k] = Vec(0.0f);
        auto add = [&](const T* row, const int64_t* off, int64_t p) {
          for (int i = 0; i < HC; i++) {
            if (i >= hc) break;
            Vec vv[NV];
            load<NV>(row + off[h + i], vv);
            const Vec w(sc[(h + i) * S + p]);
            for (int k = 0; k < NV; k++) a[i][k] = at::vec::fmadd(w, vv[k], a[i][k]);
          }
        };
        for (int64_t p = 0; p < L; p++) add(vb + p * sV[1], voff.data(), p);
        add(vn, noff.data(), L);
        for (int i = 0; i < hc; i++) {
          Vec out[NV];
          for (int k = 0; k < NV; k++) out[k] = a[i][k] * Vec(inv[h + i]);
          store<NV>(y + (b * H + h0 + h + i) * D, out);
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
// softmax and the weighted sum stay float32, as above.
//
// Keys and values are read position by position, all of a task's heads of one position
// before the next, so each sequence's keys and then its values are read as one run front to
// back: the order the hardware prefetcher streams best, with no prefetching of its own. Head
// by head within blocks of 16 positions, with rows fetched 64 KB ahead (the order both
// kernels had before), took 1.3-2x as long per layer for 32 sequences of 128-480 cached
// tokens, from DRAM or L3 alike. The products of 16 (position, head) pairs, in reading
// order, are summed in one transposing tree.

// A run of positions in the order they are attended: query head i's key at position p of
// the run is at k + p * k_step + koff[i], its value at v + p * v_step + voff[i].
struct Run {
  const c10::BFloat16 *k, *v;
  int64_t len, k_step, v_step;
  const int64_t *koff, *voff;
};

// One query's attention over two runs, a then b (decode: the cached positions, then the
// sequence's own new key; prefill: the slot's reused prefix, then the prompt up to the
// query): QH query heads, their bf16 rows in qv (NB vectors each); head i's output to
// y + i * y_head. sc holds QH rows of S scores, inv QH numbers.
template <int NB, int QHC>  // head_dim = 32 * NB; QHC: QH when it divides 16 (else 0)
__attribute__((always_inline)) inline void attend_runs_bf16(const __m512bh* qv, int64_t QH, const Run& a, const Run& b,
                                                            float* sc, int64_t S, float* inv, c10::BFloat16* y,
                                                            int64_t y_head, float scale) {
  using T = c10::BFloat16;
  constexpr int HC = NB == 1 ? 8 : 8 / NB;  // heads per pass over the values: 2 * HC * NB accumulators
  const __m512i high = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  const __m512 vscale = _mm512_set1_ps(scale);
  auto dot = [&](int64_t i, const T* row) {
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < NB; k++) acc = _mm512_dpbf16_ps(acc, qv[i * NB + k], (__m512bh)_mm512_loadu_si512(row + 32 * k));
    return acc;
  };
  // Scores of a run from column `at` of the rows: its (position, head) pairs in reading
  // order, 16 at a time, then the last few one by one.
  auto score = [&](const Run& r, int64_t at) {
    float* s = sc + at;
    int64_t l = 0, i = 0;
    for (int64_t t = 0; t + 16 <= r.len * QH; t += 16) {
      const int64_t l0 = l, i0 = i;
      Vec prod[16];
      alignas(64) float tmp[16];
      if constexpr (QHC > 0) {  // 16 / QHC whole positions: every index known when compiling
        for (int p = 0; p < 16 / QHC; p++)
          for (int h = 0; h < QHC; h++) prod[p * QHC + h] = dot(h, r.k + (l + p) * r.k_step + r.koff[h]);
        _mm512_store_ps(tmp, _mm512_mul_ps(sum16(prod), vscale));
        for (int p = 0; p < 16 / QHC; p++)
          for (int h = 0; h < QHC; h++) s[h * S + l + p] = tmp[p * QHC + h];
        l += 16 / QHC;
        continue;
      }
      for (int j = 0; j < 16; j++) {
        prod[j] = dot(i, r.k + l * r.k_step + r.koff[i]);
        if (++i == QH) i = 0, l++;
      }
      _mm512_store_ps(tmp, _mm512_mul_ps(sum16(prod), vscale));
      for (int64_t j = 0, ii = i0, ll = l0; j < 16; j++) {
        s[ii * S + ll] = tmp[j];
        if (++ii == QH) ii = 0, ll++;
      }
    }
    // The last few through the same tree, the unused sums zero: each score is then summed
    // alike wherever it falls in the groups of 16, which depend on where a run starts (a
    // cached prefix, a prompt chunk, a decode step): the same bits whatever the split.
    if (l < r.len) {
      Vec prod[16];
      alignas(64) float tmp[16];
      const int64_t l0 = l, i0 = i;
      int j = 0;
      for (; l < r.len; j++) {
        prod[j] = dot(i, r.k + l * r.k_step + r.koff[i]);
        if (++i == QH) i = 0, l++;
      }
      for (int z = j; z < 16; z++) prod[z] = _mm512_setzero_ps();
      _mm512_store_ps(tmp, _mm512_mul_ps(sum16(prod), vscale));
      for (int64_t z = 0, ii = i0, ll = l0; z < j; z++) {
        s[ii * S + ll] = tmp[z];
        if (++ii == QH) ii = 0, ll++;
      }
    }
  };
  score(a, 0);
  score(b, a.len);
  softmax_rows(sc, QH, S, a.len + b.len, inv);
  // Values: HC heads at a time in registers, position by position, run a then run b.
  for (int64_t h = 0; h < QH; h += HC) {
    const int64_t hc = std::min<int64_t>(HC, QH - h);
    __m512 acc[HC][NB][2];
    for (int i = 0; i < HC; i++)
      for (int k = 0; k < NB; k++) acc[i][k][0] = acc[i][k][1] = _mm512_setzero_ps();
    auto add = [&](const T* pos, const int64_t* off, int64_t col) {  // one position's rows
      for (int i = 0; i < HC; i++) {
        if (i >= hc) break;
        const __m512 w = _mm512_set1_ps(sc[(h + i) * S + col]);
        const T* row = pos + off[h + i];
        for (int k = 0; k < NB; k++) {
          const __m512i x = _mm512_loadu_si512(row + 32 * k);
          acc[i][k][0] = _mm512_fmadd_ps(w, _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)), acc[i][k][0]);
          acc[i][k][1] = _mm512_fmadd_ps(w, _mm512_castsi512_ps(_mm512_and_si512(x, high)), acc[i][k][1]);
        }
      }
    };
    for (int64_t p = 0; p < a.len; p++) add(a.v + p * a.v_step, a.voff, p);
    for (int64_t p = 0; p < b.len; p++) add(b.v + p * b.v_step, b.voff, a.len + p);
    // Back in order (entry 32k + 2j is the even sum j, 32k + 2j + 1 the odd) and to bf16 a
    // vector at a time, rounded to nearest even as c10::BFloat16 rounds (vcvtne2ps2bf16
    // flushes denormals, which a softmax-weighted mean of values does not reach in practice).
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int i = 0; i < hc; i++) {
      const __m512 w = _mm512_set1_ps(inv[h + i]);
      T* out = y + (h + i) * y_head;
      for (int k = 0; k < NB; k++) {
        const __m512 first = _mm512_mul_ps(_mm512_permutex2var_ps(acc[i][k][0], lo, acc[i][k][1]), w);
        const __m512 second = _mm512_mul_ps(_mm512_permutex2var_ps(acc[i][k][0], hi, acc[i][k][1]), w);
        _mm512_storeu_si512(out + 32 * k, (__m512i)_mm512_cvtne2ps_pbh(second, first));
      }
    }
  }
}

template <int NB>
inline void load_query_bf16(const c10::BFloat16* q, int64_t QH, int64_t q_head, __m512bh* qv) {
  for (int64_t i = 0; i < QH; i++)
    for (int k = 0; k < NB; k++) qv[i * NB + k] = (__m512bh)_mm512_loadu_si512(q + i * q_head + 32 * k);
}

template <int NB, int QHC>  // head_dim = 32 * NB; QHC: query heads per task, when it divides 16 (else 0)
void attend_bf16(const c10::BFloat16* q, const c10::BFloat16* k_new, const c10::BFloat16* v_new,
                 const c10::BFloat16* K, const c10::BFloat16* V, const int64_t* pos, c10::BFloat16* y,
                 int64_t n, int64_t H, int64_t G, const int64_t* sK, const int64_t* sV, const int64_t* sN,
                 float scale, const Split& sp) {
  constexpr int D = 32 * NB;
  const int64_t R = H / G;
  const int64_t QH = QHC ? QHC : sp.heads * R, S = score_stride(sp.longest);
  at::parallel_for(0, n * sp.parts, sp.grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(QH * S), inv(QH);  // query head i's scores at scores[i * S]
    std::vector<__m512bh> qv(QH * NB);
    const auto koff = head_offsets(QH, R, sK[2]), voff = head_offsets(QH, R, sV[2]), noff = head_offsets(QH, R, D);
    for (int64_t task = begin; task < end; task++) {
      const int64_t b = task / sp.parts, g0 = task % sp.parts * sp.heads, h0 = g0 * R;
      const Run cached{K + b * sK[0] + g0 * sK[2], V + b * sV[0] + g0 * sV[2], pos[b], sK[1], sV[1], koff.data(), voff.data()};
      const Run own{k_new + b * sN[0] + g0 * D, v_new + b * sN[1] + g0 * D, 1, 0, 0, noff.data(), noff.data()};
      load_query_bf16<NB>(q + (b * H + h0) * D, QH, D, qv.data());
      attend_runs_bf16<NB, QHC>(qv.data(), QH, cached, own, scores.data(), S, inv.data(), y + (b * H + h0) * D, D, scale);
    }
  });
}

// The short prompts of a packed prefill (see prefill_attention): every query token is a
// task, over its slot's reused prefix in the cache (run a) and its prompt's new keys up to
// its own (run b). q (H, T, D), k, v (G, T, D) and the caches may be strided, each row
// contiguous; y (H, T, D) contiguous. Prompt s starts at token start[s] and goes in slot
// slot[s] after past[s] cached positions; tok/prm list the tasks' tokens and prompts.
template <int NB, int QHC>
void prefill_bf16(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& Kc,
                  const at::Tensor& Vc, const int64_t* slot, const int64_t* past, const int64_t* start,
                  const std::vector<int64_t>& tok, const std::vector<int64_t>& prm, int64_t longest,
                  at::Tensor& y, float scale) {
  using T = c10::BFloat16;
  const int64_t H = q.size(0), Tn = q.size(1), G = k.size(0), R = H / G, D = 32 * NB, S = score_stride(longest);
  const T *Q = q.const_data_ptr<T>(), *Kn = k.const_data_ptr<T>(), *Vn = v.const_data_ptr<T>();
  const T *KC = Kc.const_data_ptr<T>(), *VC = Vc.const_data_ptr<T>();
  T* Y = y.mutable_data_ptr<T>();
  const int64_t n = static_cast<int64_t>(tok.size());
  // A chunk of tasks reads at least ~2k key rows, as split_tasks has it for decoding.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, longest * G / 2));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(H * S), inv(H);
    std::vector<__m512bh> qv(H * NB);
    const auto kc = head_offsets(H, R, Kc.stride(2)), vc = head_offsets(H, R, Vc.stride(2));
    const auto kn = head_offsets(H, R, k.stride(0)), vn = head_offsets(H, R, v.stride(0));
    for (int64_t j = begin; j < end; j++) {
      const int64_t t = tok[j], s = prm[j], b = slot[s], at = start[s];
      const Run cached{KC + b * Kc.stride(0), VC + b * Vc.stride(0), past[s], Kc.stride(1), Vc.stride(1), kc.data(), vc.data()};
      const Run own{Kn + at * k.stride(1), Vn + at * v.stride(1), t - at + 1, k.stride(1), v.stride(1), kn.data(), vn.data()};
      load_query_bf16<NB>(Q + t * q.stride(1), H, q.stride(0), qv.data());
      attend_runs_bf16<NB, QHC>(qv.data(), H, cached, own, scores.data(), S, inv.data(), Y + t * D, Tn * D, scale);
    }
  });
}

// f(nb, qh) with the head size (32 * nb) and a task's query heads (qh, where it divides 16;
// else 0) fixed when compiling; false for a head size without a bf16 kernel (16 takes the
// generic loop).
template <typename F>
bool with_bf16_kernel(int64_t D, int64_t QH, F&& f) {
  auto heads = [&](auto nb) {
    switch (QH) {
      case 4: return f(nb, std::integral_constant<int, 4>{});
      case 8: return f(nb, std::integral_constant<int, 8>{});
      case 16: return f(nb, std::integral_constant<int, 16>{});
    }
    return f(nb, std::integral_constant<int, 0>{});
  };
  switch (D) {
    case 32: return heads(std::integral_constant<int, 1>{}), true;
    case 64: return heads(std::integral_constant<int, 2>{}), true;
    case 128: return heads(std::integral_constant<int, 4>{}), true;
    case 256: return heads(std::integral_constant<int, 8>{}), true;
  }
  return false;
}
#endif

// Every position in pos (contiguous int64) must be one of a cache's M positions.
inline void check_positions(const char* op, const at::Tensor& pos, int64_t M) {
  const int64_t* p = pos.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < pos.numel(); b++)
    TORCH_CHECK(p[b] >= 0 && p[b] < M, op, ": position ", p[b], " outside a cache of ", M);
}

template <typename T>
void dispatch_d(int64_t D, const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                const at::Tensor& K, const at::Tensor& V, const at::Tensor& pos, at::Tensor& y,
                double scale) {
  const int64_t n = q.size(0), H = q.size(1), G = K.size(2);
  const int64_t sK[3] = {K.stride(0), K.stride(1), K.stride(2)};
  const int64_t sV[3] = {V.stride(0), V.stride(1), V.stride(2)};
  const int64_t sN[2] = {k_new.stride(0), v_new.stride(0)};  // from one sequence's new key (value) to the next
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const Split sp = split_tasks(pos.const_data_ptr<int64_t>(), n, G);
    auto bf = [&](auto nb, auto qh) {
      attend_bf16<decltype(nb)::value, decltype(qh)::value>(
          q.const_data_ptr<T>(), k_new.const_data_ptr<T>(), v_new.const_data_ptr<T>(), K.const_data_ptr<T>(),
          V.const_data_ptr<T>(), pos.const_data_ptr<int64_t>(), y.mutable_data_ptr<T>(), n, H, G, sK, sV, sN,
          static_cast<float>(scale), sp);
    };
    if (with_bf16_kernel(D, sp.heads * (H / G), bf)) return;
  }
#endif
  auto go = [&](auto nv) {
    attend<T, decltype(nv)::value>(q.const_data_ptr<T>(), k_new.const_data_ptr<T>(), v_new.const_data_ptr<T>(),
                                   K.const_data_ptr<T>(), V.const_data_ptr<T>(), pos.const_data_ptr<int64_t>(),
                                   y.mutable_data_ptr<T>(), n, H, G, sK, sV, sN, static_cast<float>(scale));
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

// q (n, H, D); k_new, v_new (n, G, D); k_cache, v_cache (slots, max_len, G, D) with their
// last dimension contiguous; pos (n,) int64, each sequence's cached length -> y (n, H, D).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_new, const at::Tensor& v_new,
                            const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& pos,
                            double scale) {
  TORCH_CHECK(q.dim() == 3 && k_new.dim() == 3 && v_new.dim() == 3, "decode_attention: q, k_new, v_new are (n, heads, D)");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.dim() == 4, "decode_attention: the caches are (slots, max_len, G, D)");
  const int64_t n = q.size(0), H = q.size(1), D = q.size(2), G = k_cache.size(2);
  TORCH_CHECK(k_new.size(0) == n && k_new.size(1) == G && k_new.size(2) == D && v_new.sizes() == k_new.sizes(),
              "decode_attention: k_new and v_new must be (n, G, D)");
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes() && k_cache.size(3) == D && k_cache.size(0) >= n,
              "decode_attention: the caches must be (slots >= n, max_len, G, D)");
  TORCH_CHECK(H % G == 0, "decode_attention: ", H, " query heads cannot share ", G, " kv heads");
  TORCH_CHECK(k_cache.stride(3) == 1 && v_cache.stride(3) == 1, "decode_attention: cache rows must be contiguous");
  const auto dt = k_cache.scalar_type();
  TORCH_CHECK(q.scalar_type() == dt && k_new.scalar_type() == dt && v_new.scalar_type() == dt && v_cache.scalar_type() == dt,
              "decode_attention: q, k_new, v_new and the caches must share one dtype");
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "decode_attention: float32 or bfloat16 only");
  TORCH_CHECK(D % VS == 0, "decode_attention: head_dim must be a multiple of ", VS);
  TORCH_CHECK(pos.dim() == 1 && pos.size(0) == n && pos.scalar_type() == at::kLong, "decode_attention: pos is (n,) int64");
  // The new keys and values may be views of the fused q/k/v projection's rows: read in
  // place when each sequence's heads are one run (a copy of v cost 5-8 us a layer).
  auto runs = [D](const at::Tensor& t) { return t.stride(2) == 1 && t.stride(1) == D ? t : t.contiguous(); };
  const auto qc = q.contiguous(), kc = runs(k_new), vc = runs(v_new), pc = pos.contiguous();
  check_positions("decode_attention", pc, k_cache.size(1));
  at::Tensor y = at::empty({n, H, D}, q.options());
  if (dt == at::kFloat)
    dispatch_d<float>(D, qc, kc, vc, k_cache, v_cache, pc, y, scale);
  else
    dispatch_d<c10::BFloat16>(D, qc, kc, vc, k_cache, v_cache, pc, y, scale);
  return y;
}

// A packed prefill's attention: q (H, T, D), k, v (G, T, D) hold S prompts one after
// another (lens[s] tokens each); prompt s attends causally over its own new keys, after
// the first past[s] positions its slot already holds in the caches (slots, max_len, G, D).
// The caches are read only; the caller stores k and v.
//
// With bf16 on AVX512-BF16, each query token of a prompt is a task of prefill_bf16, the decode kernel's loop, all such prompts in one
// parallel loop. at::scaled_dot_product_attention costs 80-110 us a call at the demo
// model's 64 tokens of 8 heads of 32, a quarter of a 32-prompt burst's prefill: the tasks
// took 1.2-1.3 ms against 2.7 ms for the 32 calls, 52-54 against 79-108 us for one prompt,
// 1.3-1.8x less up to 512 tokens, the same at 256 after 1000 cached and at 1024 alone.
// Longer prompts take the same tasks, though one SDPA call was no slower from about 1024
// tokens: a token then attends in the decode kernel's order whether its prompt is short or
// long, whole or in chunks, after a cached prefix or not, so greedy decoding gives the same
// tokens in every case (tests/test_attention_invariance.py). Any prompt elsewhere (float32,
// no AVX512-BF16) is one SDPA call.

at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slots,
                             const at::Tensor& past, const at::Tensor& lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.sizes() == v.sizes(),
              "prefill_attention: q is (H, T, D), k and v (G, T, D)");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "prefill_attention: the caches are (slots, max_len, G, D)");
  const int64_t H = q.size(0), T = q.size(1), G = k.size(0), D = q.size(2);
  TORCH_CHECK(k.size(1) == T && k_cache.size(2) == G && H % G == 0, "prefill_attention: mismatched heads or lengths");
  TORCH_CHECK(slots.dim() == 1 && past.sizes() == slots.sizes() && lens.sizes() == slots.sizes() &&
                  slots.scalar_type() == at::kLong && past.scalar_type() == at::kLong && lens.scalar_type() == at::kLong,
              "prefill_attention: slots, past and lens are (S,) int64");
  const auto sl = slots.contiguous(), pa = past.contiguous(), le = lens.contiguous();
  const int64_t *slot = sl.const_data_ptr<int64_t>(), *P = pa.const_data_ptr<int64_t>(), *n = le.const_data_ptr<int64_t>();
  const int64_t S = sl.numel();
  std::vector<int64_t> start(S);
  int64_t at = 0;
  for (int64_t s = 0; s < S; s++) {
    TORCH_CHECK(n[s] > 0 && at + n[s] <= T, "prefill_attention: the prompt lengths do not add up to ", T);
    TORCH_CHECK(slot[s] >= 0 && slot[s] < k_cache.size(0) && P[s] >= 0 && P[s] + n[s] <= k_cache.size(1),
                "prefill_attention: prompt ", s, " does not fit its slot");
    start[s] = at;
    at += n[s];
  }
  TORCH_CHECK(at == T, "prefill_attention: the prompt lengths do not add up to ", T);
  at::Tensor y = at::empty({H, T, D}, q.options());
  std::vector<bool> done(S, false);
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  const bool rows = q.stride(2) == 1 && k.stride(2) == 1 && v.stride(2) == 1 && k_cache.stride(3) == 1 && v_cache.stride(3) == 1;
  const bool bf16 = q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
                    v.scalar_type() == at::kBFloat16 && k_cache.scalar_type() == at::kBFloat16 &&
                    v_cache.scalar_type() == at::kBFloat16;
  if (rows && bf16) {
    std::vector<int64_t> tok, prm;
    int64_t longest = 0;
    for (int64_t s = 0; s < S; s++)
      {
        // Its tokens from both ends in turn (first, last, second, ...): a token's cost grows
        // with its place in the prompt, so any run of tasks, one thread's share, is even.
        for (int64_t j = 0; j < n[s]; j++) tok.push_back(start[s] + (j % 2 ? n[s] - 1 - j / 2 : j / 2)), prm.push_back(s);
        longest = std::max(longest, P[s] + n[s]);
      }
    const bool ran = !tok.empty() && with_bf16_kernel(D, H, [&](auto nb, auto qh) {
      prefill_bf16<decltype(nb)::value, decltype(qh)::value>(q, k, v, k_cache, v_cache, slot, P, start.data(), tok, prm,
                                                              longest, y, static_cast<float>(scale));
    });
    if (ran)
      for (int64_t s : prm) done[s] = true;
  }
#endif
  for (int64_t s = 0; s < S; s++) {
    if (done[s]) continue;
    at::Tensor ks = k.narrow(1, start[s], n[s]), vs = v.narrow(1, start[s], n[s]);
    std::optional<at::Tensor> mask;
    if (P[s] > 0) {  // after a reused prefix: its keys first, and the causal mask shifted by it
      ks = at::cat({k_cache[slot[s]].narrow(0, 0, P[s]).transpose(0, 1), ks}, 1);
      vs = at::cat({v_cache[slot[s]].narrow(0, 0, P[s]).transpose(0, 1), vs}, 1);
      mask = at::ones({n[s], P[s] + n[s]}, q.options().dtype(at::kBool)).tril(P[s]);
    }
    const at::Tensor out = at::scaled_dot_product_attention(q.narrow(1, start[s], n[s]).unsqueeze(0), ks.unsqueeze(0),
                                                            vs.unsqueeze(0), mask, 0.0, !mask.has_value(), scale, H != G);
    y.narrow(1, start[s], n[s]).copy_(out[0]);
  }
  return y;
}

// Store one decode step's new keys and values: k, v (n_layer, n, G, D) into the caches
// (n_layer, slots, max_len, G, D) at position pos[b] of slot b, for slots 0..n-1. Each is one
// run of G * D numbers in the cache; a copy loop here takes a fraction of what indexing with
// two index tensors costs.
void store_decoded(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& pos) {
  TORCH_CHECK(k_cache.dim() == 5 && v_cache.sizes() == k_cache.sizes(), "store_decoded: the caches are (layers, slots, max_len, G, D)");
  const int64_t layers = k_cache.size(0), M = k_cache.size(2), G = k_cache.size(3), D = k_cache.size(4);
  TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes() && k.size(0) == layers && k.size(2) == G && k.size(3) == D,
              "store_decoded: k and v must be (layers, n, G, D)");
  const int64_t n = k.size(1);
  TORCH_CHECK(n <= k_cache.size(1), "store_decoded: more sequences than slots");
  TORCH_CHECK(k.scalar_type() == k_cache.scalar_type() && v.scalar_type() == k_cache.scalar_type() &&
                  v_cache.scalar_type() == k_cache.scalar_type(),
              "store_decoded: keys, values and caches must share one dtype");
  for (const at::Tensor* c : {&k_cache, &v_cache})
    TORCH_CHECK(c->stride(4) == 1 && c->stride(3) == D, "store_decoded: a position's rows must be contiguous");
  TORCH_CHECK(pos.dim() == 1 && pos.size(0) == n && pos.scalar_type() == at::kLong, "store_decoded: pos is (n,) int64");
  const auto kc = k.contiguous(), vc = v.contiguous(), pc = pos.contiguous();
  check_positions("store_decoded", pc, M);
  const int64_t* p = pc.const_data_ptr<int64_t>();
  const int64_t e = k.element_size(), run = G * D * e;
  char *K = static_cast<char*>(k_cache.data_ptr()), *V = static_cast<char*>(v_cache.data_ptr());
  const char *ks = static_cast<const char*>(kc.const_data_ptr()), *vs = static_cast<const char*>(vc.const_data_ptr());
  for (int64_t l = 0; l < layers; l++)
    for (int64_t b = 0; b < n; b++) {
      const int64_t src = (l * n + b) * run;
      std::memcpy(K + (l * k_cache.stride(0) + b * k_cache.stride(1) + p[b] * k_cache.stride(2)) * e, ks + src, run);
      std::memcpy(V + (l * v_cache.stride(0) + b * v_cache.stride(1) + p[b] * v_cache.stride(2)) * e, vs + src, run);
    }
}

}  // namespace

TORCH_LIBRARY(chatsmith_cpu, m) {
  m.def("decode_attention(Tensor q, Tensor k_new, Tensor v_new, Tensor k_cache, Tensor v_cache, Tensor pos, float scale) -> Tensor");
  m.def("prefill_attention(Tensor q, Tensor k, Tensor v, Tensor k_cache, Tensor v_cache, Tensor slots, Tensor past, Tensor lens, float scale) -> Tensor");
  m.def("store_decoded(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k, Tensor v, Tensor pos) -> ()");
}

TORCH_LIBRARY_IMPL(chatsmith_cpu, CPU, m) {
  m.impl("decode_attention", &decode_attention);
  m.impl("prefill_attention", &prefill_attention);
  m.impl("store_decoded", &store_decoded);
}
