#include "moe_bench/correctness.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "moe_bench/kernel.hpp"
#include "moe_bench/quant.hpp"
#include "moe_bench/reference.hpp"

namespace moe_bench {

// About 2.5x the worst error measured over 32 shapes (E 8/64, k 2/8, d 64/1024, f 96/2048,
// uniform and zipf routing) on every implementation: bf16 3.8e-3, f16 6.2e-4, f32 below 2e-6
// (kept at 1e-4 for reductions up to 16k long). The 16-bit errors come from rounding the hidden
// activations and the outputs to the dtype, the same in every implementation.
double tolerance_for(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return 1e-4;
    case Dtype::kBF16:
      return 1e-2;
    case Dtype::kF16:
      return 1.5e-3;
  }
  return 1e-4;
}

// The a8 implementations are checked against the oracle with their quantization applied
// (reference_outputs), so what remains is their arithmetic, and hidden values that round to the
// neighbouring int8 code: the FP32 hidden value and the FP64 one fall on either side of a
// rounding boundary, which moves an output by one step of that hidden value (a step is max|h| /
// 127). About 2.5x the worst error `cpu_w8a8` measured (AMD Zen 3, 2026-12-07) over 1600 cases
// (E 4-32, k 1-4, d 24-2048, f 20-1024, 1-64 tokens, uniform and hot routing, int8 and q4, up to
// 5 seeds): f32 2.0e-3 and f16 2.5e-3 (at f 96-1024, where many hidden values give room for such
// neighbours; none at f <= 48), bf16 3.6e-3 (the outputs' rounding, as for every kernel). A
// first tolerance of 1.5e-3 for f32, from d <= 544 only, failed validate at d 1101 (1.9e-3).
double tolerance_for_a8(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return 5e-3;
    case Dtype::kBF16:
      return 1e-2;
    case Dtype::kF16:
      return 6e-3;
  }
  return 1e-2;
}

double unit_roundoff(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return 0x1p-24;
    case Dtype::kBF16:
      return 0x1p-8;
    case Dtype::kF16:
      return 0x1p-11;
  }
  return 0x1p-24;
}

double tie_margin_for(Dtype) {
  // Inputs are identical (already rounded) in every implementation and the router accumulates
  // in FP32 everywhere, so the scores differ by FP32 rounding whatever the dtype.
  return 1e-5;
}

namespace {

double token_flops(const Shape& s) {
  double m = s.activation == Activation::kGelu ? 2.0 : 3.0;
  return 2.0 * static_cast<double>(s.d_model) *
         static_cast<double>(s.top_k * s.d_ff + s.shared_width()) * m;
}

// Tokens the oracle computes outputs for: all when they fit the budget, otherwise a seeded sample
// in which every expert that kept a token is represented.
std::vector<int64_t> sample_tokens(const Problem& p, const BasicRouting<double>& r, double budget) {
  const Shape& s = p.shape;
  std::vector<int64_t> all(static_cast<size_t>(s.tokens));
  std::iota(all.begin(), all.end(), 0);
  const auto limit = static_cast<int64_t>(budget / token_flops(s));
  if (s.tokens <= std::max<int64_t>(limit, 1)) return all;

  std::mt19937_64 rng(p.seed ^ 0x6f7261636c65ULL);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<uint8_t> covered(static_cast<size_t>(s.experts), 0);
  std::vector<uint8_t> taken(static_cast<size_t>(s.tokens), 0);
  std::vector<int64_t> out;
  for (int64_t t : all) {
    bool adds = false;
    for (int64_t j = 0; j < s.top_k; ++j) {
      const int64_t i = t * s.top_k + j;
      if (r.kept[i] && !covered[r.expert[i]]) {
        covered[r.expert[i]] = 1;
        adds = true;
      }
    }
    if (adds) {
      out.push_back(t);
      taken[t] = 1;
    }
  }
  for (int64_t t : all) {
    if (static_cast<int64_t>(out.size()) >= limit) break;
    if (!taken[t]) out.push_back(t);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The FP64 outputs of the sampled tokens (rows of `only` left as they are, where given), an
// expert at a time: each expert the tokens chose is held whole in FP32 once (MatrixRows::all:
// dequantized, or generated again for the unquantized twin), so a quantized layer is never held
// in f32 and a twin costs the generator only the experts its tokens use. The contributions are
// summed per token in the order of its k choices, then the shared experts: the additions of
// token_output<double>, bit for bit.
//
// `a8`: each token's input row quantized to int8 (quantize_activations, in float on the problem's
// x: the codes the a8 kernels compute) and each expert's hidden row quantized in FP64 by the same
// rule before the down projection: the semantics of the a8 implementations (Kernel::
// quantizes_activations).
void reference_outputs(const Problem& p, int64_t layer, const BasicRouting<double>& r,
                       const std::vector<int64_t>& tokens, const std::vector<uint8_t>* only,
                       std::vector<double>& out, bool a8 = false) {
  const Shape& s = p.shape;
  const int64_t d = s.d_model, k = s.top_k, n = static_cast<int64_t>(tokens.size());
  out.resize(static_cast<size_t>(n * d));
  const auto wanted = [&](int64_t i) { return only == nullptr || (*only)[i] != 0; };
  // The (token, choice) slots of each expert, i * k + j.
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(s.experts));
  for (int64_t i = 0; i < n; ++i) {
    if (!wanted(i)) continue;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t o = tokens[i] * k + j;
      if (r.kept[o]) slots[r.expert[o]].push_back(i * k + j);
    }
  }
  std::vector<double> part(static_cast<size_t>(n * k * d));
  std::vector<double> shared(static_cast<size_t>(s.shared_width() > 0 ? n * d : 0));
  const int64_t width = std::max(s.d_ff, s.shared_width());
  std::vector<float> b1, b3, b2;
  // Expert e's contribution for the given tokens (slot / stride) into base + slot * d. Several
  // tokens, or small matrices: the tokens in parallel, each on one thread (one parallel region an
  // expert: a region a token cost the consistency tests up to 1.6x their time, under ctest's two
  // processes on two cores). One or two tokens of large matrices (decode): the rows of each in
  // parallel. Either way each value is one thread's sum in the same order.
  const auto run = [&](int64_t e, const std::vector<int64_t>& list, int64_t stride, double* base) {
    const MatrixRows w1(p, layer, ExpertMatrix::kW1, e), w3(p, layer, ExpertMatrix::kW3, e),
        w2(p, layer, ExpertMatrix::kW2, e);
    const float* m1 = w1.all(b1);
    const float* m3 = w3.empty() ? nullptr : w3.all(b3);
    const float* m2 = w2.all(b2);
    const auto count = static_cast<int64_t>(list.size());
    const int64_t macs = w1.rows() * d;
    const bool rows_parallel = count <= 2 && macs >= (int64_t{1} << 18);
#pragma omp parallel if (!rows_parallel && count * macs >= (int64_t{1} << 20))
    {
      std::vector<double> x(static_cast<size_t>(d)), h(static_cast<size_t>(width));
      std::vector<int8_t> codes(static_cast<size_t>(a8 ? d : 0));
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < count; ++i) {
        const int64_t slot = list[i], t = tokens[slot / stride];
        if (a8) {
          const double scale = quantize_activations(p.x.data() + t * d, d, codes.data());
          for (int64_t c = 0; c < d; ++c) x[c] = codes[c] * scale;
        } else {
          for (int64_t c = 0; c < d; ++c) x[c] = static_cast<double>(p.x[t * d + c]);
        }
        reference::expert_output(m1, m3, m2, d, w1.rows(), s.activation, x.data(), h.data(),
                                 base + slot * d, rows_parallel, a8);
      }
    }
  };
  for (int64_t e = 0; e < s.experts; ++e) {
    if (!slots[e].empty()) run(e, slots[e], k, part.data());
  }
  if (s.shared_width() > 0) {
    std::vector<int64_t> all;
    for (int64_t i = 0; i < n; ++i) {
      if (wanted(i)) all.push_back(i);
    }
    run(-1, all, 1, shared.data());
  }
#pragma omp parallel for schedule(static) if (n * d >= (int64_t{1} << 16))
  for (int64_t i = 0; i < n; ++i) {
    if (!wanted(i)) continue;
    double* y = out.data() + i * d;
    std::fill(y, y + d, 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t o = tokens[i] * k + j;
      if (!r.kept[o]) continue;
      const double weight = r.weight[o];
      const double* c = part.data() + (i * k + j) * d;
      for (int64_t col = 0; col < d; ++col) y[col] += weight * c[col];
    }
    if (s.shared_width() > 0) {
      const double* c = shared.data() + i * d;
      for (int64_t col = 0; col < d; ++col) y[col] += 1.0 * c[col];
    }
  }
}

bool same_set(const int32_t* a, const int32_t* b, int64_t k) {
  std::vector<int32_t> x(a, a + k), y(b, b + k);
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  return x == y;
}

}  // namespace

Oracle::Oracle(const Problem& problem, int64_t layer, double flop_budget)
    : problem_(problem), layer_(layer) {
  const Shape& s = problem.shape;
  margin_.assign(static_cast<size_t>(s.tokens), 0.0);
  logits_.resize(static_cast<size_t>(s.tokens * s.experts));
  routing_ = reference::route_all<double>(problem, layer, margin_.data(), logits_.data());
  probs_.resize(logits_.size());
  for (int64_t t = 0; t < s.tokens; ++t) {
    router_probabilities(s.routing, logits_.data() + t * s.experts, s.experts,
                         probs_.data() + t * s.experts);
  }
  sample_ = sample_tokens(problem, routing_, flop_budget);
  reference_outputs(problem, layer, routing_, sample_, nullptr, ref_);
}

Correctness Oracle::check(std::span<const float> y, std::span<const int32_t> selected,
                          int extra_roundings, bool a8) const {
  const Shape& s = problem_.shape;
  const int64_t d = s.d_model, k = s.top_k;
  Correctness c;
  c.tolerance = (a8 ? tolerance_for_a8(problem_.dtype) : tolerance_for(problem_.dtype)) +
                extra_roundings * unit_roundoff(problem_.dtype);
  if (a8 && !have_a8_) {
    reference_outputs(problem_, layer_, routing_, sample_, nullptr, ref_a8_, true);
    have_a8_ = true;
  }
  c.tokens_checked = static_cast<int64_t>(sample_.size());
  if (static_cast<int64_t>(y.size()) != s.tokens * d ||
      static_cast<int64_t>(selected.size()) != s.tokens * k) {
    c.max_abs_err = c.max_rel_err = c.nmse = std::numeric_limits<double>::infinity();
    c.pass = false;
    return c;
  }

  // Near ties: where the implementation legitimately chose otherwise, the reference follows its
  // choice (with the oracle's own weights for those experts); elsewhere a different choice fails.
  const double margin = tie_margin_for(problem_.dtype);
  BasicRouting<double> routing = routing_;
  bool reselected = false;
  std::vector<double> scratch(static_cast<size_t>(s.experts));
  for (int64_t t = 0; t < s.tokens; ++t) {
    const bool tie = margin_[t] < margin;
    c.near_tie_tokens += tie;
    if (same_set(selected.data() + t * k, routing_.expert.data() + t * k, k)) continue;
    for (int64_t e : selected.subspan(t * k, k)) {
      if (e < 0 || e >= s.experts) {
        c.pass = false;
        c.selection_mismatches = s.tokens;
        c.max_abs_err = c.max_rel_err = c.nmse = std::numeric_limits<double>::infinity();
        return c;
      }
    }
    if (!tie) {
      ++c.selection_mismatches;
      continue;
    }
    ++c.near_tie_reselected;
    reselected = true;
    std::copy_n(selected.data() + t * k, k, routing.expert.data() + t * k);
    route_token_with(s.routing, logits_.data() + t * s.experts, s.experts, k,
                     routing.expert.data() + t * k, routing.weight.data() + t * k, scratch.data());
  }
  const std::vector<double>* ref = a8 ? &ref_a8_ : &ref_;
  std::vector<double> adjusted;
  if (reselected) {
    apply_capacity(s, routing);
    std::vector<uint8_t> changed(sample_.size(), 0);
    for (size_t i = 0; i < sample_.size(); ++i) {
      const int64_t o = sample_[i] * k;
      changed[i] = !std::equal(routing.expert.begin() + o, routing.expert.begin() + o + k,
                               routing_.expert.begin() + o) ||
                   !std::equal(routing.kept.begin() + o, routing.kept.begin() + o + k,
                               routing_.kept.begin() + o);
    }
    adjusted = *ref;
    reference_outputs(problem_, layer_, routing, sample_, &changed, adjusted, a8);
    ref = &adjusted;
  }

  double max_ref = 0, err2 = 0, ref2 = 0;
  for (size_t i = 0; i < sample_.size(); ++i) {
    const float* yt = y.data() + sample_[i] * d;
    const double* rt = ref->data() + i * d;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = std::fabs(static_cast<double>(yt[j]) - rt[j]);
      c.max_abs_err = std::isnan(diff) ? std::numeric_limits<double>::infinity()
                                       : std::max(c.max_abs_err, diff);
      max_ref = std::max(max_ref, std::fabs(rt[j]));
      err2 += diff * diff;
      ref2 += rt[j] * rt[j];
    }
  }
  const double inf = std::numeric_limits<double>::infinity();
  c.max_rel_err = max_ref > 0 ? c.max_abs_err / max_ref : (c.max_abs_err == 0 ? 0 : inf);
  c.nmse = ref2 > 0 ? err2 / ref2 : (err2 == 0 ? 0 : inf);
  c.pass = c.max_rel_err <= c.tolerance && c.selection_mismatches == 0;
  return c;
}

Correctness Oracle::check(const Kernel& kernel) const {
  return check(kernel.output(), kernel.selected_experts(),
               kernel.extra_roundings(problem_.shape, problem_.dtype),
               kernel.quantizes_activations());
}

Load Oracle::load() const {
  const Shape& s = problem_.shape;
  Load load;
  load.tokens_per_expert.assign(static_cast<size_t>(s.experts), 0);
  std::vector<double> selected(static_cast<size_t>(s.experts), 0.0);
  std::vector<double> mean_prob(static_cast<size_t>(s.experts), 0.0);
  for (int64_t i = 0; i < s.tokens * s.top_k; ++i) {
    selected[routing_.expert[i]] += 1;
    if (routing_.kept[i]) ++load.tokens_per_expert[routing_.expert[i]];
  }
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t e = 0; e < s.experts; ++e) mean_prob[e] += probs_[t * s.experts + e];
  }
  const double assignments = static_cast<double>(s.tokens * s.top_k);
  int64_t kept = 0, most = 0;
  for (int64_t e = 0; e < s.experts; ++e) {
    const int64_t n = load.tokens_per_expert[e];
    kept += n;
    most = std::max(most, n);
    load.active_experts += n > 0;
    load.aux_loss += (selected[e] / assignments) * (mean_prob[e] / static_cast<double>(s.tokens));
  }
  load.aux_loss *= static_cast<double>(s.experts);
  const double mean = static_cast<double>(kept) / static_cast<double>(s.experts);
  load.imbalance = mean > 0 ? static_cast<double>(most) / mean : 0.0;
  load.dropped = routing_.dropped;
  return load;
}

}  // namespace moe_bench
