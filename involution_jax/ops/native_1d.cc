// The three partials of 1-D involution as CPU loops, called from XLA through its FFI.
//
// x (B, T, C), kernel (B, O, G, K), y (B, O, C), C = G * Cg; output row o
// reads input row o*s + u*d - low through tap u (rows outside x are zeros).
//   forward:     y[b,o,c]  = sum_u k[b,o,g(c),u] x[b, o*s+u*d-low, c]
//   input grad:  dx[b,t,c] = sum of k[b,o,g(c),u] y[b,o,c] over the (o, u) that read t
//   kernel grad: dk[b,o,g,u] = sum_{c in g} y[b,o,c] x[b, o*s+u*d-low, c]
// Each output row is computed whole by one thread (a gather, never a scatter),
// with the taps summed in order 0..K-1 as the XLA loops do; no temporary but
// the kernel gradient's scratch, a (C, ~300) block per thread.
// `native.py` compiles this file on first use; see there.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t batch, length, rows, channels, groups, taps, stride, dilation, low;
  int64_t group_channels() const { return channels / groups; }
};

// Runs body(begin, end) over [0, n) in chunks on XLA's intra-op pool. The
// calling thread takes chunks too and waits only for chunks already taken,
// so it cannot deadlock when the pool's threads are busy (or are the caller).
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t min_chunk, const Body& body) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t chunks = std::min<int64_t>(threads * 4, (n + min_chunk - 1) / min_chunk);
  if (threads == 1 || chunks <= 1) {
    body(0, n);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  auto work = [state, chunks, n, &body]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < chunks;) {
      body(i * n / chunks, (i + 1) * n / chunks);
      std::lock_guard<std::mutex> lock(state->mutex);
      if (++state->done == chunks) state->finished.notify_all();
    }
  };
  for (int64_t i = 1; i < std::min(threads, chunks); ++i) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done == chunks; });
}

// Calls f(std::integral_constant<int, W>, c) for channel chunks [c, c + W) of
// [0, n), widest first: a chunk's accumulator is W registers' worth of lanes.
template <typename F>
inline void ForChunks(int64_t n, const F& f) {
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) f(std::integral_constant<int, 16>{}, c);
  for (; c + 8 <= n; c += 8) f(std::integral_constant<int, 8>{}, c);
  for (; c + 4 <= n; c += 4) f(std::integral_constant<int, 4>{}, c);
  for (; c < n; ++c) f(std::integral_constant<int, 1>{}, c);
}

// For J groups at once (J independent accumulators hide the FMA latency):
// out[j*Cg + c] = sum_i w[j*K + i*ws] * src[i*ss + j*Cg + c] for j < J, c < W,
// summed in order of i.
template <int W, int J, typename T>
inline void WeightedSums(int64_t n, const T* src, int64_t ss, const T* w, int64_t ws, int64_t Cg,
                         int64_t K, T* out) {
  T acc[J][W] = {};
  for (int64_t i = 0; i < n; ++i) {
    const T* s = src + i * ss;
    for (int j = 0; j < J; ++j) {
      const T wi = w[j * K + i * ws];
#pragma omp simd
      for (int c = 0; c < W; ++c) acc[j][c] += wi * s[j * Cg + c];
    }
  }
  for (int j = 0; j < J; ++j)
    for (int c = 0; c < W; ++c) out[j * Cg + c] = acc[j][c];
}

// The taps a row sums, as arithmetic progressions: n terms, the first term's
// source row and weight, and the strides (in elements) between terms.
struct Terms {
  int64_t n, src, src_stride, weight, weight_stride;
};

// Output row o of the forward: taps u in [lo, hi) land in x; tap u reads row
// o*s + u*d - low with weight k[o, :, u].
inline Terms ForwardTerms(const Geometry& g, int64_t o) {
  const int64_t start = o * g.stride - g.low;  // the row tap 0 reads
  const int64_t lo = start >= 0 ? 0 : (-start + g.dilation - 1) / g.dilation;
  const int64_t hi = std::min(g.taps, start >= g.length ? 0 : (g.length - 1 - start) / g.dilation + 1);
  return {std::max<int64_t>(0, hi - lo), (start + lo * g.dilation) * g.channels,
          g.dilation * g.channels, o * g.groups * g.taps + lo, 1};
}

// Input row t of the input gradient: the (o, u) with o*s + u*d - low = t.
// Valid u step by s / gcd(s, d), and o falls by d / gcd(s, d) per step.
inline Terms GradXTerms(const Geometry& g, int64_t t) {
  const int64_t s = g.stride, d = g.dilation, q0 = t + g.low;  // o * s = q0 - u * d
  const int64_t step = s / std::gcd(s, d), fall = d / std::gcd(s, d);
  int64_t u = 0;
  while (u < std::min(step, g.taps) && (q0 - u * d) % s) ++u;
  if (u >= std::min(step, g.taps) || q0 - u * d < 0) return {0, 0, 0, 0, 0};
  int64_t o = (q0 - u * d) / s;
  if (o >= g.rows) {  // skip the steps whose row lies past the output
    const int64_t skip = (o - g.rows) / fall + 1;
    u += skip * step;
    o -= skip * fall;
  }
  if (u >= g.taps || o < 0) return {0, 0, 0, 0, 0};
  const int64_t n = std::min((g.taps - 1 - u) / step, o / fall) + 1;
  const int64_t row_elems = g.groups * g.taps;
  return {n, o * g.channels, -fall * g.channels, o * row_elems + u, step - fall * row_elems};
}

// Rows [r0, r1) of out (`rows_per_batch` per batch): out[r, c] is the sum of
// the terms `terms_of(row within the batch)` lists, each a weight of c's group
// times a source row's channel c. Groups in blocks of 4 per row (looping over
// all rows per block instead read 1.7-3x slower: strided, 4 KiB apart).
template <typename T, typename TermsOf>
void WeightedRows(const Geometry& g, const T* src, int64_t src_batch, const T* w,
                  int64_t w_batch, int64_t rows_per_batch, T* out, int64_t r0, int64_t r1,
                  const TermsOf& terms_of) {
  const int64_t C = g.channels, G = g.groups, K = g.taps, Cg = g.group_channels();
  constexpr int64_t kBlock = 4;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / rows_per_batch;
    const Terms t = terms_of(r % rows_per_batch);
    for (int64_t j0 = 0; j0 < G; j0 += kBlock) {
      const int64_t groups = std::min(kBlock, G - j0);
      const T* s = src + b * src_batch + t.src + j0 * Cg;
      const T* wr = w + b * w_batch + t.weight + j0 * K;
      T* o = out + r * C + j0 * Cg;
      ForChunks(Cg, [&](auto width, int64_t c) {
        constexpr int W = decltype(width)::value;
        if (groups == kBlock) {
          WeightedSums<W, kBlock>(t.n, s + c, t.src_stride, wr, t.weight_stride, Cg, K, o + c);
        } else {
          for (int64_t j = 0; j < groups; ++j)
            WeightedSums<W, 1>(t.n, s + j * Cg + c, t.src_stride, wr + j * K, t.weight_stride, Cg,
                               K, o + j * Cg + c);
        }
      });
    }
  }
}

template <typename T>
void Forward(const Geometry& g, const T* x, const T* k, T* y, int64_t r0, int64_t r1) {
  WeightedRows(g, x, g.length * g.channels, k, g.rows * g.groups * g.taps, g.rows, y, r0, r1,
               [&](int64_t o) { return ForwardTerms(g, o); });
}

template <typename T>
void GradX(const Geometry& g, const T* k, const T* y, T* dx, int64_t r0, int64_t r1) {
  WeightedRows(g, y, g.rows * g.channels, k, g.rows * g.groups * g.taps, g.length, dx, r0, r1,
               [&](int64_t t) { return GradXTerms(g, t); });
}

template <int W, typename T>
inline T Dot(const T* a, const T* b) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int c = 0; c < W; ++c) sum += a[c] * b[c];
  return sum;
}

// The kernel gradient for any dilation: one dot product over a group's channels per tap.
template <typename T>
void GradKernelDots(const Geometry& g, const T* x, const T* y, T* dk, int64_t r0, int64_t r1) {
  const int64_t C = g.channels, G = g.groups, K = g.taps, Cg = g.group_channels();
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / g.rows, o = r % g.rows;
    const Terms t = ForwardTerms(g, o);
    const int64_t lo = t.weight - o * G * K;  // the first tap inside x
    const T* yr = y + r * C;
    T* out = dk + r * G * K;
    if (t.n < K) std::fill(out, out + G * K, T(0));
    for (int64_t j = 0; j < G; ++j) {
      for (int64_t i = 0; i < t.n; ++i) {
        const T* xs = x + b * g.length * C + t.src + i * t.src_stride + j * Cg;
        const T* ys = yr + j * Cg;
        T sum = 0;
        ForChunks(Cg, [&](auto width, int64_t c) {
          sum += Dot<decltype(width)::value>(ys + c, xs + c);
        });
        out[j * K + lo + i] = sum;
      }
    }
  }
}

// out[u] = sum_c y[c] * xt[c * L + u] for u < taps (<= 32): NC chunks of 8
// taps, NC independent accumulators, the sum over c in order.
template <int NC, typename T>
inline void TapSums(int64_t Cg, const T* y, const T* xt, int64_t L, int64_t taps, T* out) {
  T acc[NC][8] = {};
  for (int64_t c = 0; c < Cg; ++c) {
    const T yc = y[c];
    const T* xs = xt + c * L;
    for (int q = 0; q < NC; ++q) {
#pragma omp simd
      for (int u = 0; u < 8; ++u) acc[q][u] += yc * xs[q * 8 + u];
    }
  }
  for (int q = 0; q < NC; ++q) {
    if (q * 8 + 8 <= taps) {
#pragma omp simd
      for (int u = 0; u < 8; ++u) out[q * 8 + u] = acc[q][u];
    } else {
      for (int u = 0; q * 8 + u < taps; ++u) out[q * 8 + u] = acc[q][u];
    }
  }
}

// The kernel gradient for dilation 1, vectorised over the taps: for a block of
// output rows, the rows of x they read are transposed into a (C, L) scratch
// (zeros outside x), where tap u of output row o is column (o - o0)*s + u.
template <typename T>
void GradKernelTransposed(const Geometry& g, const T* x, const T* y, T* dk, int64_t r0,
                          int64_t r1) {
  const int64_t C = g.channels, G = g.groups, K = g.taps, Cg = g.group_channels();
  constexpr int64_t kBlockRows = 256, kSlack = 32;  // taps are read in chunks of up to 32
  std::vector<T> xt(C * ((kBlockRows - 1) * g.stride + K + kSlack));
  for (int64_t r = r0; r < r1;) {
    const int64_t b = r / g.rows, o0 = r % g.rows;
    const int64_t o1 = std::min({g.rows, o0 + kBlockRows, o0 + (r1 - r)});
    const int64_t first = o0 * g.stride - g.low;  // the input row in column 0
    const int64_t used = (o1 - o0 - 1) * g.stride + K, L = used + kSlack;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t t = first + i;
      const bool inside = t >= 0 && t < g.length && i < used;
      const T* xr = x + (b * g.length + t) * C;
      for (int64_t c = 0; c < C; ++c) xt[c * L + i] = inside ? xr[c] : T(0);
    }
    for (int64_t o = o0; o < o1; ++o) {
      for (int64_t j = 0; j < G; ++j) {
        const int64_t row = r + (o - o0);
        const T* ys = y + row * C + j * Cg;
        const T* xs = xt.data() + j * Cg * L + (o - o0) * g.stride;
        T* out = dk + row * G * K + j * K;
        for (int64_t u0 = 0; u0 < K; u0 += 32) {
          const int64_t taps = std::min<int64_t>(32, K - u0);
          switch ((taps + 7) / 8) {
            case 1: TapSums<1>(Cg, ys, xs + u0, L, taps, out + u0); break;
            case 2: TapSums<2>(Cg, ys, xs + u0, L, taps, out + u0); break;
            case 3: TapSums<3>(Cg, ys, xs + u0, L, taps, out + u0); break;
            default: TapSums<4>(Cg, ys, xs + u0, L, taps, out + u0); break;
          }
        }
      }
    }
    r += o1 - o0;
  }
}

template <typename T>
void GradKernel(const Geometry& g, const T* x, const T* y, T* dk, int64_t r0, int64_t r1) {
  // The transposed scratch costs about as much as 8 taps' dot products (K = 3:
  // 18 vs 40 ms, K = 15: 80 vs 45 ms, batch 8, T = 4096, C = 512, one thread).
  if (g.dilation == 1 && g.taps > 8) {
    GradKernelTransposed(g, x, y, dk, r0, r1);
  } else {
    GradKernelDots(g, x, y, dk, r0, r1);
  }
}

// XLA's large output buffers come fresh from mmap, and the first touch of each
// 4 KiB page faults: where transparent huge pages are opt-in ("madvise"), ask
// for them (batch 8, T = 4096, C = 512, causal forward: K = 7 28 -> 12 ms,
// K = 31 43 -> 32 ms on a 2-core VM). Only whole 2 MiB pages inside the buffer.
inline void AskForHugePages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

enum class Partial { kForward, kGradX, kGradKernel };

// x: (B, T, C), kernel: (B, O, G, K), y: (B, O, C); which two are operands and
// which is the result depends on the partial.
template <Partial P>
ffi::Error Run(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::AnyBuffer b, int64_t stride,
               int64_t dilation, int64_t low, ffi::Result<ffi::AnyBuffer> result) {
  const ffi::AnyBuffer& out = *result;
  auto x_dims = P == Partial::kGradX ? out.dimensions() : a.dimensions();
  auto k_dims = P == Partial::kForward ? b.dimensions()
                : P == Partial::kGradX ? a.dimensions()
                                       : out.dimensions();
  if (x_dims.size() != 3 || k_dims.size() != 4) {
    return ffi::Error::InvalidArgument("involution_1d: x must be (B, T, C), kernel (B, O, G, K)");
  }
  Geometry g{x_dims[0], x_dims[1], k_dims[1], x_dims[2], k_dims[2], k_dims[3],
             stride,    dilation,  low};
  if (g.groups < 1 || g.channels % g.groups || stride < 1 || dilation < 1) {
    return ffi::Error::InvalidArgument("involution_1d: bad groups, stride or dilation");
  }
  const int64_t rows = g.batch * (P == Partial::kGradX ? g.length : g.rows);
  const int64_t min_chunk = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.channels * g.taps));
  auto dispatch = [&](auto zero) -> ffi::Error {
    using T = decltype(zero);
    const T* pa = a.typed_data<T>();
    const T* pb = b.typed_data<T>();
    T* po = result->typed_data<T>();
    ParallelFor(pool, rows, min_chunk, [&](int64_t r0, int64_t r1) {
      if constexpr (P == Partial::kForward) Forward(g, pa, pb, po, r0, r1);
      if constexpr (P == Partial::kGradX) GradX(g, pa, pb, po, r0, r1);
      if constexpr (P == Partial::kGradKernel) GradKernel(g, pa, pb, po, r0, r1);
    });
    return ffi::Error::Success();
  };
  AskForHugePages(result->untyped_data(), out.size_bytes());
  ffi::DataType dtype = out.element_type();
  if (a.element_type() != dtype || b.element_type() != dtype) {
    return ffi::Error::InvalidArgument("involution_1d: operands and result must share a dtype");
  }
  if (dtype == ffi::DataType::F32) return dispatch(float(0));
  if (dtype == ffi::DataType::F64) return dispatch(double(0));
  return ffi::Error::InvalidArgument("involution_1d: only float32 and float64 are supported");
}

}  // namespace

#define INVOLUTION_1D_HANDLER(name, partial)               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, Run<partial>,        \
                                ffi::Ffi::Bind()           \
                                    .Ctx<ffi::ThreadPool>() \
                                    .Arg<ffi::AnyBuffer>() \
                                    .Arg<ffi::AnyBuffer>() \
                                    .Attr<int64_t>("stride") \
                                    .Attr<int64_t>("dilation") \
                                    .Attr<int64_t>("low")  \
                                    .Ret<ffi::AnyBuffer>());

INVOLUTION_1D_HANDLER(InvolutionForward1D, Partial::kForward)
INVOLUTION_1D_HANDLER(InvolutionGradX1D, Partial::kGradX)
INVOLUTION_1D_HANDLER(InvolutionGradKernel1D, Partial::kGradKernel)
