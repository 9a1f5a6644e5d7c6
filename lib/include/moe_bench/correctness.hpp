#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe_bench/problem.hpp"
#include "moe_bench/routing.hpp"

namespace moe_bench {

class Kernel;

/// Outcome of checking one implementation's output against the FP64 oracle.
struct Correctness {
  bool pass = false;
  double max_abs_err = 0;
  double max_rel_err = 0;  ///< max abs error / max |ref| over the checked tokens
  double nmse = 0;         ///< sum (y - ref)^2 / sum ref^2
  double tolerance = 0;    ///< bound on max_rel_err for the dtype
  int64_t tokens_checked = 0;
  int64_t near_tie_tokens = 0;       ///< tokens whose selection margin is below the tie margin
  int64_t near_tie_reselected = 0;   ///< of those, tokens where the implementation chose otherwise
  int64_t selection_mismatches = 0;  ///< tokens that chose otherwise without a near tie
};

/// Tolerance on max_rel_err for a dtype.
double tolerance_for(Dtype d);
/// Tolerance on max_rel_err for the a8 implementations (int8 activations), against the oracle
/// with the same quantization of the activations (Oracle::check).
double tolerance_for_a8(Dtype d);
/// Unit roundoff of the dtype (2^-24 f32, 2^-8 bf16, 2^-11 f16): the relative error of one
/// rounding to it.
double unit_roundoff(Dtype d);
/// Selection margin below which a token counts as a router near tie.
double tie_margin_for(Dtype d);

/// The FP64 oracle for one case: the naive implementation in double precision on the problem's
/// (dtype-rounded) inputs. Routing covers every token; expert outputs are computed for a seeded
/// sample of tokens that represents every expert that received a token.
class Oracle {
 public:
  /// `flop_budget` bounds the expert FLOPs the oracle spends on its token sample.
  Oracle(const Problem& problem, int64_t layer = 0, double flop_budget = 2e9);

  /// Checks an implementation's output and its selected experts [T*k]. `extra_roundings`: an
  /// implementation that rounds to the dtype more often than the semantics (a peer run the way
  /// its users run it) is allowed that many unit roundoffs more (Kernel::extra_roundings).
  /// `a8`: an implementation that quantizes its activations to int8 per row
  /// (Kernel::quantizes_activations) is checked against the oracle with the same quantization
  /// (each token's input row in float, each expert's hidden row in FP64, by
  /// quantize_activations), held to tolerance_for_a8.
  Correctness check(std::span<const float> y, std::span<const int32_t> selected,
                    int extra_roundings = 0, bool a8 = false) const;
  /// Checks an implementation's own last output and selection on its own terms: its extra
  /// roundings (Kernel::extra_roundings) and whether it quantizes its activations.
  Correctness check(const Kernel& kernel) const;

  /// Realised expert load of the oracle's routing.
  Load load() const;
  const BasicRouting<double>& routing() const { return routing_; }
  const std::vector<int64_t>& sampled_tokens() const { return sample_; }
  /// The FP64 outputs of the sampled tokens, [sampled_tokens().size(), d].
  const std::vector<double>& expected() const { return ref_; }

 private:
  const Problem& problem_;
  int64_t layer_;
  BasicRouting<double> routing_;
  std::vector<double> margin_;  ///< selection margin per token
  std::vector<double> logits_;  ///< router logits [T,E]
  std::vector<double> probs_;   ///< router probabilities [T,E] for the aux loss
  std::vector<int64_t> sample_;
  std::vector<double> ref_;  ///< oracle output of the sampled tokens [sample, d]
  mutable std::vector<double> ref_a8_;  ///< the same with int8 activations, when first asked for
  mutable bool have_a8_ = false;
};

}  // namespace moe_bench
