#include "ep.hpp"

#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <thread>

#include "moe_bench/aligned.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/placement.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/reference.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/stats.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::ep {
namespace {

void check_mpi(int code, const char* what) {
  if (code != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    throw std::runtime_error(fmt::format("{} failed: {}", what, std::string(text, len)));
  }
}

double now() { return MPI_Wtime(); }

// What one iteration cost on this rank, in seconds.
enum Stage {
  kRoute,
  kDispatch,
  kCompute,
  kCombine,
  kExchangeDispatch,
  kExchangeCombine,
  kTotal,
  kStages
};

// One rank's part of an expert-parallel layer.
class EpLayer {
 public:
  EpLayer(const Session& s, Kernel& kernel, const Problem& problem, int64_t tokens,
          const Placement& placement, bool window)
      : s_(s), kernel_(kernel), p_(problem), T_(tokens), place_(placement), window_(window) {
    const Shape& sh = p_.shape;
    N_ = s_.size();
    r_ = s_.rank();
    k_ = sh.top_k;
    d_ = sh.d_model;
    elem_ = p_.dtype == Dtype::kF32 ? 4 : 2;
    // A token record: its row in the dtype (exact: the values are representable), then k expert
    // ids (-1: not for this rank) and k weights.
    record_ = d_ * elem_ + k_ * 8;
    const int64_t max_rows = static_cast<int64_t>(N_) * T_;
    routing_.resize(T_, k_);
    // The buffers MPI moves live on huge pages: a large message is copied by the receiving
    // process straight from the sender's pages (Open MPI's CMA), and after a compute stage that
    // streamed the weights every 4 KiB page is a cold page-table walk.
    send_.resize(max_rows * record_, kExchangeHugeFrom);
    recv_.resize(max_rows * record_, kExchangeHugeFrom);
    send_tokens_.resize(static_cast<size_t>(max_rows));
    xr_.resize(static_cast<size_t>(max_rows * d_));
    er_.resize(static_cast<size_t>(max_rows * k_));
    wr_.resize(er_.size());
    kr_.resize(er_.size());
    shared_.resize(static_cast<size_t>(max_rows));
    yr_.resize(max_rows * d_, kExchangeHugeFrom);
    back_.resize(max_rows * d_, kExchangeHugeFrom);
    y_.resize(static_cast<size_t>(T_ * d_));
    written_.resize(static_cast<size_t>(T_));
    for (auto* v : {&scount_, &rcount_, &sdispl_, &rdispl_}) v->assign(static_cast<size_t>(N_), 0);
    MPI_Type_contiguous(static_cast<int>(record_), MPI_BYTE, &record_type_);
    MPI_Type_commit(&record_type_);
    MPI_Type_contiguous(static_cast<int>(d_), MPI_FLOAT, &row_type_);
    MPI_Type_commit(&row_type_);
    if (window_) open_windows();
  }
  ~EpLayer() {
    // Freeing a window is collective: a rank unwinding after an error would wait there for ranks
    // that wait for it elsewhere. It is on its way to MPI_Abort; the windows go with the process.
    if (window_ && std::uncaught_exceptions() == 0) {
      MPI_Win_unlock_all(records_win_);
      MPI_Win_unlock_all(rows_win_);
      MPI_Win_free(&records_win_);
      MPI_Win_free(&rows_win_);
    }
    MPI_Type_free(&record_type_);
    MPI_Type_free(&row_type_);
  }
  EpLayer(const EpLayer&) = delete;
  EpLayer& operator=(const EpLayer&) = delete;

  // One forward of `layer`; fills this rank's seconds per stage.
  void step(int64_t layer, std::array<double, kStages>& t) {
    const double t0 = now();
    kernel_.route(layer, T_, routing_.expert, routing_.weight);
    apply_global_capacity();
    const double t1 = now();
    pack();
    // A barrier before each exchange: waiting for a slower rank is charged to the stage that
    // was slow, and the exchange's own time is the transfer alone.
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    const double x0 = now();
    if (window_) {
      put_records();
    } else {
      exchange_records();
    }
    const double t2 = now();
    const int64_t rows = unpack();
    kernel_.run_routed(
        layer,
        RoutedRows{xr_, rows, k_, std::span(er_).first(rows * k_), std::span(wr_).first(rows * k_),
                   std::span(kr_).first(rows * k_), std::span(shared_).first(rows)},
        std::span(yr_.data(), static_cast<size_t>(rows * d_)));
    rows_computed_ = kept_rows(rows);
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    const double t3 = now();
    // Combine: every received row goes back to its source, which sums them in rank order.
    if (window_) {
      put_rows();
    } else {
      exchange_rows();
    }
    const double x1 = now();
    std::fill(written_.begin(), written_.end(), 0);
    for (int q = 0; q < N_; ++q) {
      for (int i = 0; i < scount_[q]; ++i) {
        const int64_t slot = sdispl_[q] + i;
        const int32_t tok = send_tokens_[static_cast<size_t>(slot)];
        float* dst = y_.data() + tok * d_;
        const float* src = back_row(q, i, slot);
        if (!written_[static_cast<size_t>(tok)]) {
          std::memcpy(dst, src, static_cast<size_t>(d_) * sizeof(float));
          written_[static_cast<size_t>(tok)] = 1;
        } else {
          for (int64_t c = 0; c < d_; ++c) dst[c] += src[c];
        }
      }
    }
    round_all(p_.dtype, y_.data(), T_ * d_);
    const double t4 = now();
    t = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t2 - x0, x1 - t3, t4 - t0};
  }

  const std::vector<float>& output() const { return y_; }
  const std::vector<int32_t>& selected() const { return routing_.expert; }
  int64_t rows_computed() const { return rows_computed_; }
  int64_t experts_computed() const { return experts_computed_; }
  // Bytes this rank sent to other ranks in the last step: records out (dispatch), rows back
  // (combine).
  std::array<double, 2> bytes_sent() const {
    std::array<double, 2> b{};
    for (int q = 0; q < N_; ++q) {
      if (q == r_) continue;
      b[0] += static_cast<double>(scount_[q]) * static_cast<double>(record_);
      b[1] += static_cast<double>(rcount_[q]) * static_cast<double>(d_ * 4);
    }
    return b;
  }
  // MPI_Alltoallv alone on the last step's counts (dispatch then combine), as osu_alltoallv
  // measures it, whichever transport the step uses: this rank's seconds for each of the two.
  std::array<double, 2> alltoall_alone() {
    // The very calls of a step's two exchanges (counts, records; rows back; the counts come back
    // equal), each after a barrier as in the step, timed without the barriers.
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    double a = now();
    exchange_records();
    const double dispatch = now() - a;
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    a = now();
    exchange_rows();
    return {dispatch, now() - a};
  }

 private:
  // Capacity is a property of the whole layer: assignments kept in global token order, so each
  // rank's count per expert starts where the lower ranks' counts end (MPI_Exscan; counting every
  // assignment is enough, a count at or past the capacity drops them all either way).
  void apply_global_capacity() {
    const Shape& sh = p_.shape;
    std::vector<int64_t> before(static_cast<size_t>(sh.experts), 0);
    if (expert_capacity(sh) >= 0) {
      std::vector<int64_t> mine(before.size(), 0);
      for (int32_t e : routing_.expert) ++mine[static_cast<size_t>(e)];
      check_mpi(MPI_Exscan(mine.data(), before.data(), static_cast<int>(sh.experts), MPI_INT64_T,
                           MPI_SUM, MPI_COMM_WORLD),
                "MPI_Exscan (capacity)");
      if (r_ == 0) std::fill(before.begin(), before.end(), 0);  // undefined on rank 0
    }
    apply_capacity(sh, routing_, before);
  }

  // Token records per destination rank, in token order: a token goes once to each rank that
  // owns one of its kept experts, and always to this rank (its shared experts are computed here).
  void pack() {
    std::fill(scount_.begin(), scount_.end(), 0);
    std::vector<uint8_t> to(static_cast<size_t>(T_ * N_), 0);
    for (int64_t t = 0; t < T_; ++t) {
      uint8_t* need = to.data() + t * N_;
      need[r_] = 1;
      for (int64_t j = 0; j < k_; ++j) {
        const size_t i = static_cast<size_t>(t * k_ + j);
        if (routing_.kept[i]) need[place_.rank_for(routing_.expert[i], global(t))] = 1;
      }
      for (int q = 0; q < N_; ++q) scount_[q] += need[q];
    }
    sdispl_[0] = 0;
    for (int q = 1; q < N_; ++q) sdispl_[q] = sdispl_[q - 1] + scount_[q - 1];
    std::vector<int> fill(sdispl_);
    for (int64_t t = 0; t < T_; ++t) {
      for (int q = 0; q < N_; ++q) {
        if (!to[static_cast<size_t>(t * N_ + q)]) continue;
        const int64_t slot = fill[q]++;
        send_tokens_[static_cast<size_t>(slot)] = static_cast<int32_t>(t);
        char* rec = send_.data() + slot * record_;
        const float* x = p_.x.data() + t * d_;
        if (elem_ == 4) {
          std::memcpy(rec, x, static_cast<size_t>(d_) * 4);
        } else {
          auto* h = reinterpret_cast<uint16_t*>(rec);
          for (int64_t c = 0; c < d_; ++c) {
            h[c] = p_.dtype == Dtype::kBF16 ? to_bf16_bits(x[c]) : to_f16_bits(x[c]);
          }
        }
        auto* ids = reinterpret_cast<int32_t*>(rec + d_ * elem_);
        auto* ws = reinterpret_cast<float*>(rec + d_ * elem_ + k_ * 4);
        for (int64_t j = 0; j < k_; ++j) {
          const size_t i = static_cast<size_t>(t * k_ + j);
          const bool here = routing_.kept[i] && place_.rank_for(routing_.expert[i], global(t)) == q;
          ids[j] = here ? routing_.expert[i] : -1;
          ws[j] = routing_.weight[i];
        }
      }
    }
  }

  // Where each source's rows start among the received ones, from the counts.
  void receive_displacements() {
    rdispl_[0] = 0;
    for (int q = 1; q < N_; ++q) rdispl_[q] = rdispl_[q - 1] + rcount_[q - 1];
  }

  // Dispatch's exchange: the counts, then the token records.
  void exchange_records() {
    check_mpi(MPI_Alltoall(scount_.data(), 1, MPI_INT, rcount_.data(), 1, MPI_INT, MPI_COMM_WORLD),
              "MPI_Alltoall (counts)");
    receive_displacements();
    check_mpi(
        MPI_Alltoallv(send_.data(), scount_.data(), sdispl_.data(), record_type_, recv_.data(),
                      rcount_.data(), rdispl_.data(), record_type_, MPI_COMM_WORLD),
        "MPI_Alltoallv (dispatch)");
  }

  // Combine's exchange: every computed row back to its source.
  void exchange_rows() {
    check_mpi(MPI_Alltoallv(yr_.data(), rcount_.data(), rdispl_.data(), row_type_, back_.data(),
                            scount_.data(), sdispl_.data(), row_type_, MPI_COMM_WORLD),
              "MPI_Alltoallv (combine)");
  }

  // The received records as rows, slots and the shared-expert mark (this rank's own tokens).
  int64_t unpack() {
    int64_t rows = 0;
    for (int q = 0; q < N_; ++q) {
      for (int i = 0; i < rcount_[q]; ++i, ++rows) {
        const char* rec = record_from(q, i, rows);
        float* x = xr_.data() + rows * d_;
        if (elem_ == 4) {
          std::memcpy(x, rec, static_cast<size_t>(d_) * 4);
        } else {
          const auto* h = reinterpret_cast<const uint16_t*>(rec);
          for (int64_t c = 0; c < d_; ++c) {
            x[c] = p_.dtype == Dtype::kBF16 ? from_bf16_bits(h[c]) : from_f16_bits(h[c]);
          }
        }
        const auto* ids = reinterpret_cast<const int32_t*>(rec + d_ * elem_);
        const auto* ws = reinterpret_cast<const float*>(rec + d_ * elem_ + k_ * 4);
        for (int64_t j = 0; j < k_; ++j) {
          const size_t at = static_cast<size_t>(rows * k_ + j);
          er_[at] = ids[j] >= 0 ? ids[j] : 0;
          wr_[at] = ws[j];
          kr_[at] = ids[j] >= 0;
        }
        shared_[static_cast<size_t>(rows)] = q == r_;
      }
    }
    return rows;
  }

  // The exchanges through MPI shared-memory windows (all ranks on one node): each rank's
  // window has a fixed region per source rank (T records; T rows back), so a source writes
  // straight into its region of every destination, count included, and one barrier publishes
  // them. No rendezvous and no single-copy system call per message: after a compute stage that
  // streamed the weights, those cold paths cost MPI_Alltoallv 10-15 us per call here, more than
  // the copy. A rank's own records and rows are read where they lie.
  void open_windows() {
    records_head_ = static_cast<int64_t>(N_) * kCountStride;
    const auto records_bytes = static_cast<MPI_Aint>(records_head_ + N_ * T_ * record_);
    const auto rows_bytes = static_cast<MPI_Aint>(N_ * T_ * d_ * sizeof(float));
    check_mpi(MPI_Win_allocate_shared(records_bytes, 1, MPI_INFO_NULL, MPI_COMM_WORLD,
                                      &records_base_, &records_win_),
              "MPI_Win_allocate_shared (records)");
    check_mpi(MPI_Win_allocate_shared(rows_bytes, sizeof(float), MPI_INFO_NULL, MPI_COMM_WORLD,
                                      &rows_base_, &rows_win_),
              "MPI_Win_allocate_shared (rows)");
    records_peer_.assign(static_cast<size_t>(N_), nullptr);
    rows_peer_.assign(static_cast<size_t>(N_), nullptr);
    for (int q = 0; q < N_; ++q) {
      MPI_Aint size = 0;
      int unit = 0;
      check_mpi(MPI_Win_shared_query(records_win_, q, &size, &unit, &records_peer_[q]),
                "MPI_Win_shared_query");
      check_mpi(MPI_Win_shared_query(rows_win_, q, &size, &unit, &rows_peer_[q]),
                "MPI_Win_shared_query");
    }
    check_mpi(MPI_Win_lock_all(MPI_MODE_NOCHECK, records_win_), "MPI_Win_lock_all");
    check_mpi(MPI_Win_lock_all(MPI_MODE_NOCHECK, rows_win_), "MPI_Win_lock_all");
  }

  // Makes every rank's writes to `win` visible to every rank.
  static void publish(MPI_Win win) {
    check_mpi(MPI_Win_sync(win), "MPI_Win_sync");
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    check_mpi(MPI_Win_sync(win), "MPI_Win_sync");
  }

  // Dispatch through the windows: this rank's count and records into its region of every other
  // rank. A destination reads a region only between this publish and its combine barrier, and
  // the next write comes after that barrier.
  void put_records() {
    for (int q = 0; q < N_; ++q) {
      if (q == r_) continue;
      char* dst = records_peer_[q];
      std::memcpy(dst + r_ * kCountStride, &scount_[q], sizeof(int));
      std::memcpy(dst + records_head_ + r_ * T_ * record_, send_.data() + sdispl_[q] * record_,
                  static_cast<size_t>(scount_[q] * record_));
    }
    publish(records_win_);
    for (int q = 0; q < N_; ++q) {
      if (q != r_) std::memcpy(&rcount_[q], records_base_ + q * kCountStride, sizeof(int));
    }
    rcount_[r_] = scount_[r_];
    receive_displacements();
  }

  // Combine through the windows: the rows computed for each source into this rank's region of
  // the source's window.
  void put_rows() {
    for (int q = 0; q < N_; ++q) {
      if (q == r_) continue;
      std::memcpy(rows_peer_[q] + r_ * T_ * d_, yr_.data() + rdispl_[q] * d_,
                  static_cast<size_t>(rcount_[q] * d_) * sizeof(float));
    }
    publish(rows_win_);
  }

  // The i-th record from source q (the row'th received in all).
  const char* record_from(int q, int i, int64_t row) const {
    if (!window_) return recv_.data() + row * record_;
    if (q == r_) return send_.data() + (sdispl_[r_] + i) * record_;
    return records_base_ + records_head_ + (q * T_ + i) * record_;
  }

  // The combined row for this rank's i-th record sent to q (send slot `slot`).
  const float* back_row(int q, int i, int64_t slot) const {
    if (!window_) return back_.data() + slot * d_;
    if (q == r_) return yr_.data() + (rdispl_[r_] + i) * d_;
    return rows_base_ + (q * T_ + i) * d_;
  }

  int64_t kept_rows(int64_t rows) {
    int64_t n = 0;
    std::vector<uint8_t> seen(static_cast<size_t>(p_.shape.experts), 0);
    for (int64_t i = 0; i < rows * k_; ++i) {
      if (!kr_[static_cast<size_t>(i)]) continue;
      ++n;
      seen[static_cast<size_t>(er_[static_cast<size_t>(i)])] = 1;
    }
    experts_computed_ = std::count(seen.begin(), seen.end(), uint8_t{1});
    return n;
  }

  int64_t global(int64_t t) const { return static_cast<int64_t>(r_) * T_ + t; }

  const Session& s_;
  Kernel& kernel_;
  const Problem& p_;
  int64_t T_;
  const Placement& place_;
  int N_ = 1, r_ = 0;
  int64_t k_ = 1, d_ = 1, elem_ = 4, record_ = 0, rows_computed_ = 0, experts_computed_ = 0;
  Routing routing_;  ///< this rank's tokens: experts, weights, kept by the global capacity
  static constexpr size_t kExchangeHugeFrom = size_t{64} << 10;
  Aligned<char> send_, recv_;
  std::vector<int32_t> send_tokens_;
  std::vector<float> xr_, wr_, y_;
  Aligned<float> yr_, back_;
  std::vector<int32_t> er_;
  std::vector<uint8_t> kr_, shared_, written_;
  std::vector<int> scount_, rcount_, sdispl_, rdispl_;
  MPI_Datatype record_type_{}, row_type_{};
  bool window_ = false;  ///< exchanges through shared-memory windows, else MPI_Alltoallv
  static constexpr int64_t kCountStride = 64;  ///< a cache line per source's count
  int64_t records_head_ = 0;                   ///< the counts before the records
  char* records_base_ = nullptr;
  float* rows_base_ = nullptr;
  std::vector<char*> records_peer_;
  std::vector<float*> rows_peer_;
  MPI_Win records_win_ = MPI_WIN_NULL, rows_win_ = MPI_WIN_NULL;
};

// Whether every rank shares this node's memory (MPI's shared-memory windows then reach them all).
bool one_node() {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int here = 0, all = 0;
  MPI_Comm_size(node, &here);
  MPI_Comm_size(MPI_COMM_WORLD, &all);
  MPI_Comm_free(&node);
  return here == all;
}

// The per-stage maxima over ranks of one step.
std::array<double, kStages> max_over_ranks(const std::array<double, kStages>& mine) {
  std::array<double, kStages> out{};
  check_mpi(MPI_Allreduce(mine.data(), out.data(), kStages, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce (stage times)");
  return out;
}

// Rank 0 decides, every rank follows (sampling stops together).
bool agree(bool rank0_says) {
  int v = rank0_says ? 1 : 0;
  check_mpi(MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return v != 0;
}

// One way to run the layer within a launch: a placement and an exchange, with its own kernel
// (holding the experts the placement gives this rank), buffers and samples. The variants of a
// case are measured in turn, round after round, so that they share the machine's drift.
struct Variant {
  Placement place;
  bool window = false;
  std::unique_ptr<Kernel> kernel;
  std::unique_ptr<EpLayer> layer;
  int64_t inner = 1;
  std::vector<std::array<double, kStages>> samples;
  std::vector<double> alone_dispatch, alone_combine;
  std::array<double, 3> most{};  ///< bytes sent, the most any rank: dispatch, combine, both
  std::vector<float> y_all;      ///< rank 0: the checked step's outputs, every rank's tokens
  std::vector<int32_t> sel_all;
  std::vector<int64_t> rows_per_rank, experts_per_rank;
};

std::string variant_label(const std::string& impl, const Variant& v) {
  return fmt::format("{} ({}{}, {})", impl, v.place.policy,
                     v.place.replicas > 0 ? fmt::format(" +{}", v.place.replicas) : std::string(),
                     v.window ? "window" : "alltoallv");
}

// Warm-up, then the checked step on layer 0: outputs, selections and loads gathered on rank 0.
void checked_step(Variant& v, int r, int N, int64_t T, int64_t d, int64_t k,
                  const HarnessOptions& h) {
  std::array<double, kStages> t{};
  for (int i = 0; i < std::max(h.warmup, 1); ++i) v.layer->step(0, t);
  v.layer->step(0, t);
  v.y_all.assign(r == 0 ? static_cast<size_t>(N * T * d) : 0, 0.0f);
  v.sel_all.assign(r == 0 ? static_cast<size_t>(N * T * k) : 0, 0);
  check_mpi(MPI_Gather(v.layer->output().data(), static_cast<int>(T * d), MPI_FLOAT, v.y_all.data(),
                       static_cast<int>(T * d), MPI_FLOAT, 0, MPI_COMM_WORLD),
            "MPI_Gather (outputs)");
  check_mpi(MPI_Gather(v.layer->selected().data(), static_cast<int>(T * k), MPI_INT32_T,
                       v.sel_all.data(), static_cast<int>(T * k), MPI_INT32_T, 0, MPI_COMM_WORLD),
            "MPI_Gather (selections)");
  v.rows_per_rank.assign(static_cast<size_t>(N), 0);
  v.experts_per_rank.assign(static_cast<size_t>(N), 0);
  const int64_t rows = v.layer->rows_computed(), experts = v.layer->experts_computed();
  check_mpi(
      MPI_Gather(&rows, 1, MPI_INT64_T, v.rows_per_rank.data(), 1, MPI_INT64_T, 0, MPI_COMM_WORLD),
      "MPI_Gather (rows)");
  check_mpi(MPI_Gather(&experts, 1, MPI_INT64_T, v.experts_per_rank.data(), 1, MPI_INT64_T, 0,
                       MPI_COMM_WORLD),
            "MPI_Gather (experts)");
  v.inner = inner_reps_for(max_over_ranks(t)[kTotal], h.min_sample_s);
}

// The exchanges alone on the variant's counts: the MPI all-to-all rate on this machine, after
// warm-up iterations as osu_alltoallv skips them. The same statistic as the step's exchanges:
// each exchange's maximum over ranks, medians summed.
void measure_alone(Variant& v) {
  for (int i = 0; i < 20; ++i) v.layer->alltoall_alone();
  for (int i = 0; i < 50; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const std::array<double, 2> mine = v.layer->alltoall_alone();
    std::array<double, 2> slowest{};
    check_mpi(MPI_Allreduce(mine.data(), slowest.data(), 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce (bandwidth)");
    v.alone_dispatch.push_back(slowest[0]);
    v.alone_combine.push_back(slowest[1]);
  }
  const std::array<double, 2> b = v.layer->bytes_sent();
  const std::array<double, 3> sent{b[0], b[1], b[0] + b[1]};
  check_mpi(MPI_Allreduce(sent.data(), v.most.data(), 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce (bytes)");
}

// Rank 0: the variant's result from its samples and the figures every variant shares.
Result variant_result(const Variant& v, const Result& shared, const Case& c, const EpOptions& ep,
                      int64_t T, const Oracle& oracle, const Problem& p) {
  const int N = v.place.ranks;
  Result res = shared;
  res.correctness = oracle.check(v.y_all, v.sel_all, v.kernel->extra_roundings(p.shape, p.dtype));
  res.load = oracle.load();
  if (!res.correctness->pass) {
    res.status = Status::kFailed;
    res.reason = fmt::format(
        "the output gathered from {} ranks differs from the FP64 oracle (max rel err {:.3g}, "
        "tolerance {:.3g}, {} selection mismatches)",
        N, res.correctness->max_rel_err, res.correctness->tolerance,
        res.correctness->selection_mismatches);
  }
  for (const auto& sm : v.samples) res.samples_s.push_back(sm[kTotal]);
  res.inner_reps = v.inner;
  if (res.status == Status::kOk && res.samples_s.empty()) {
    res.status = Status::kSkipped;
    res.reason = "interrupted before its first sample";
  }
  if (!res.samples_s.empty()) res.stats = summarize(res.samples_s, c.seed);
  EpInfo e;
  e.ranks = N;
  e.placement = v.place.policy;
  e.replicas = v.place.replicas;
  e.tokens_per_rank = T;
  e.exchange = v.window ? "window" : "alltoallv";
  auto stage = [&](Stage st) {
    std::vector<double> x;
    for (const auto& sm : v.samples) x.push_back(sm[st]);
    return median(x);
  };
  e.route_s = stage(kRoute);
  e.dispatch_s = stage(kDispatch);
  e.compute_s = stage(kCompute);
  e.combine_s = stage(kCombine);
  e.dispatch_exchange_s = stage(kExchangeDispatch);
  e.combine_exchange_s = stage(kExchangeCombine);
  e.threads_per_rank = c.threads;
  e.bytes_sent_per_rank = v.most[2];
  e.dispatch_bytes_per_rank = v.most[0];
  e.combine_bytes_per_rank = v.most[1];
  const double alone_s = median(v.alone_dispatch) + median(v.alone_combine);
  e.alltoall_gbytes_per_s = alone_s > 0 ? v.most[2] / alone_s * 1e-9 : 0;
  // With nothing sent to another rank (one rank) there is no exchange to rate.
  const double exchanges = e.dispatch_exchange_s + e.combine_exchange_s;
  e.exchange_pct_of_alltoall = exchanges > 0 && v.most[2] > 0 ? 100.0 * alone_s / exchanges : 0;
  e.rows_per_rank = v.rows_per_rank;
  e.experts_per_rank = v.experts_per_rank;
  std::vector<double> rows_d(v.rows_per_rank.begin(), v.rows_per_rank.end());
  e.load_max_over_mean = max_over_mean(rows_d);
  if (const EpCalibration* cal = calibration_for(ep, c)) {
    e.model_predicted_s = predict_step_s(*cal, e, cpu_count());
  }
  res.notes = fmt::format(
      "expert-parallel over {} MPI ranks of {} threads, {} placement{}, exchanges through {}; "
      "each rank holds the weights of the experts placed on it (rank 0 also the whole layer, "
      "for the oracle)",
      N, c.threads, v.place.policy,
      v.place.replicas > 0 ? fmt::format(" with {} replicas", v.place.replicas) : std::string(),
      v.window ? "shared-memory windows" : "MPI_Alltoallv");
  res.stages = {{"route", e.route_s},
                {"dispatch", e.dispatch_s},
                {"compute", e.compute_s},
                {"combine", e.combine_s}};
  res.ep = std::move(e);
  return res;
}

void run_case(const Session& s, const Case& c, int64_t case_index, const std::string& impl,
              const HarnessOptions& h, const EpOptions& ep, Report& report) {
  const int N = s.size(), r = s.rank();
  const int64_t T = c.shape.tokens;
  Case global = c;
  global.shape.tokens = T * N;
  Result shared;
  shared.impl = impl;
  shared.kase = global;
  shared.kase.threads = c.threads * N;  // held to the peaks of every rank's threads together
  shared.status = Status::kOk;
  auto probe = h.make(impl);
  if (!probe->splits_routing()) {
    throw UsageError(fmt::format(
        "{} cannot run expert-parallel: it does not split routing from its experts (cpu does)",
        impl));
  }
  if (auto why = probe->can_run(global.shape, global.dtype)) {
    shared.status = Status::kSkipped;
    shared.reason = *why;
    if (r == 0) report.results.push_back(shared);
    return;
  }
  const int64_t layers = layers_for(global, h, {impl}, N);
  // Every rank generates the layer from the same seed and keeps its own T tokens (rows r*T..)
  // at the front of x; rank 0 keeps all of them for the oracle and the single-process run.
  Problem p = make_problem(global.shape, global.dtype, global.seed, layers);
  const int64_t d = global.shape.d_model, k = global.shape.top_k;
  std::vector<float> all_x;
  if (r == 0) all_x = p.x;
  std::copy(p.x.begin() + r * T * d, p.x.begin() + (r + 1) * T * d, p.x.begin());
  std::fill(p.x.begin() + T * d, p.x.end(), 0.0f);

  const double setup0 = now();
  // The calibration batch: this batch's routing by layer 0, before capacity (the layer's own
  // routing, from the reference: a kernel is prepared only once its placement is known).
  const int64_t E = global.shape.experts;
  std::vector<int64_t> load(static_cast<size_t>(E), 0), all_load(load.size());
  {
    std::vector<double> logits(static_cast<size_t>(E)), wt(static_cast<size_t>(k)),
        scratch(static_cast<size_t>(2 * E));
    std::vector<int32_t> ex(static_cast<size_t>(k));
    for (int64_t t = 0; t < T; ++t) {
      reference::router_logits(p, p.layers[0], t, logits.data());
      route_token(global.shape.routing, logits.data(), p.layers[0].selection_bias.data(), E, k,
                  ex.data(), wt.data(), scratch.data());
      for (int32_t e : ex) ++load[static_cast<size_t>(e)];
    }
  }
  check_mpi(MPI_Allreduce(load.data(), all_load.data(), static_cast<int>(load.size()), MPI_INT64_T,
                          MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce (load)");
  // Each variant's kernel keeps only the weights of the experts its placement gives this rank.
  std::vector<std::unique_ptr<Variant>> variants;
  // Variants of one placement get kernels of their own all the same: alternating variants then
  // never find each other's weights in cache.
  for (const std::string& policy : ep.placements) {
    const int replicas = ep.replicas >= 0 ? ep.replicas : (policy == "load-aware" ? N : 0);
    const Placement place = place_experts(policy, E, N, all_load, replicas);
    std::vector<uint8_t> held(static_cast<size_t>(E), 0);
    for (size_t e = 0; e < held.size(); ++e) {
      const auto& owners = place.owners[e];
      held[e] = std::find(owners.begin(), owners.end(), r) != owners.end();
    }
    for (const std::string& exchange : ep.exchanges) {
      auto v = std::make_unique<Variant>();
      v->place = place;
      v->window = exchange == "window";
      v->kernel = h.make(impl);
      v->kernel->hold_experts(held);
      v->kernel->prepare(p, c.threads);
      variants.push_back(std::move(v));
    }
  }
  // Rank 0 keeps the whole layer as generated (the oracle and the one-process run need it); the
  // others let it go.
  if (r != 0) {
    for (LayerWeights& w : p.layers) {
      for (auto* v : {&w.w1, &w.w3, &w.w2, &w.ws1, &w.ws3, &w.ws2}) std::vector<float>().swap(*v);
    }
  }
  for (auto& v : variants)
    v->layer = std::make_unique<EpLayer>(s, *v->kernel, p, T, v->place, v->window);
  // Test-only: a rank that fails in the middle of a run (its exchange windows open), or dies
  // without a word (tests/cli/ep_test.cpp).
  if (const char* fail = std::getenv("MOE_BENCH_TEST_FAIL_RANK");
      fail != nullptr && std::atoi(fail) == r) {
    throw std::runtime_error("failure injected for a test (MOE_BENCH_TEST_FAIL_RANK)");
  }
  if (const char* die = std::getenv("MOE_BENCH_TEST_KILL_RANK");
      die != nullptr && std::atoi(die) == r) {
    std::raise(SIGKILL);
  }
  shared.setup_s = now() - setup0;
  shared.layers = layers;
  for (auto& v : variants) checked_step(*v, r, N, T, d, k, h);

  // Sampling: rounds of every variant once, in an order shuffled alike on every rank (the same
  // seed: the case's index, which every rank knows; only rank 0 holds results); steps separated
  // by a barrier, each step's time the slowest rank's.
  std::vector<size_t> order(variants.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(h.seed ^ (static_cast<uint64_t>(case_index + 1) * 0x9e3779b9ULL));
  std::vector<int64_t> next(variants.size(), 0);
  int64_t rounds = 0;
  const double begin = now();
  while (agree(r == 0 && !interrupt_requested() && keep_sampling(rounds, now() - begin, h))) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i : order) {
      Variant& v = *variants[i];
      MPI_Barrier(MPI_COMM_WORLD);
      std::array<double, kStages> sum{}, t{};
      for (int64_t rep = 0; rep < v.inner; ++rep) {
        v.layer->step(next[i]++ % layers, t);
        const auto m = max_over_ranks(t);
        for (int j = 0; j < kStages; ++j) sum[j] += m[j] / static_cast<double>(v.inner);
      }
      v.samples.push_back(sum);
    }
    ++rounds;
  }
  if (r == 0 && interrupt_requested()) report.interrupted = true;
  for (auto& v : variants) measure_alone(*v);

  // Rank 0 alone: the oracle, and the same implementation in one process on all N x T tokens
  // with every rank's threads; the others wait without spinning.
  if (r == 0) {
    p.x = all_x;
    Oracle oracle(p);
    Kernel& single = *variants.front()->kernel;
    const int total_threads = std::min<int>(c.threads * N, std::max(1, cpu_count()));
    std::vector<Result> results;
    for (const auto& v : variants) {
      results.push_back(variant_result(*v, shared, c, ep, T, oracle, p));
    }
    single.hold_experts({});
    single.prepare(p, total_threads);
    int64_t layer_next = 0;
    for (int i = 0; i < std::max(h.warmup, 1); ++i) time_calls(single, 1, layers, layer_next);
    const int64_t reps = inner_reps_for(time_calls(single, 1, layers, layer_next), h.min_sample_s);
    std::vector<double> one;
    const double b = now();
    while (keep_sampling(static_cast<int64_t>(one.size()), now() - b, h)) {
      one.push_back(time_calls(single, reps, layers, layer_next));
    }
    for (Result& res : results) res.ep->single_process_s = median(one);
    // Several variants: each against the first, measured in the same rounds.
    const Result& first = results.front();
    for (size_t i = 1; i < results.size(); ++i) {
      if (results[i].status != Status::kOk || first.status != Status::kOk) continue;
      report.comparisons.push_back({global, variant_label(impl, *variants[i]),
                                    variant_label(impl, *variants.front()),
                                    speedup(results[i].samples_s, first.samples_s, global.seed)});
    }
    for (Result& res : results) report.results.push_back(std::move(res));
  }
  quiet_barrier();
}

}  // namespace

namespace {

char g_ended_line[256];
size_t g_ended_length = 0;

// Async-signal-safe: one write of the line made at start-up, then exit.
void on_ended_by_mpirun(int) {
  const ssize_t written = write(STDERR_FILENO, g_ended_line, g_ended_length);
  (void)written;
  std::_Exit(static_cast<int>(ExitCode::kEnvironment));
}

}  // namespace

std::vector<std::string> resolve_exchanges(const std::vector<std::string>& asked) {
  const bool shared = one_node();
  std::vector<std::string> out;
  for (const std::string& a : asked) {
    if (a != "auto" && a != "window" && a != "alltoallv") {
      throw UsageError(
          fmt::format("unknown --ep-exchange '{}' (known: auto, window, alltoallv)", a));
    }
    if (a == "window" && !shared) {
      throw EnvironmentError(
          "--ep-exchange window needs every rank on one node (shared memory), and these ranks "
          "span several: use --ep-exchange alltoallv or auto");
    }
    const std::string use = a == "auto" ? (shared ? "window" : "alltoallv") : a;
    if (std::find(out.begin(), out.end(), use) == out.end()) out.push_back(use);
  }
  return out;
}

void quiet_barrier() {
  MPI_Request req;
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
  int done = 0;
  while (true) {
    check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Session::Session() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // Errors come back as codes (check_mpi) instead of aborting inside MPI without a word.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  // When a rank ends (an error it reported through abort(), or killed or crashed without a word)
  // mpirun ends the others with SIGTERM; under `mpirun -q` a rank that died silently would leave
  // nothing on the screen but an exit status.
  const std::string line = fmt::format(
      "moe-bench: error: rank {} of {}: stopped by mpirun after another rank ended (a rank "
      "killed or crashed says nothing itself; mpirun without -q names it)\n",
      rank_, size_);
  const size_t n = std::min(line.size(), sizeof(g_ended_line) - 1);
  std::memcpy(g_ended_line, line.data(), n);
  g_ended_length = n;
  std::signal(SIGTERM, on_ended_by_mpirun);
}

Session::~Session() { MPI_Finalize(); }

void Session::abort(const std::string& message, int code) const {
  fmt::print(stderr, "moe-bench: error: rank {} of {}: {}\n", rank_, size_, message);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::string unavailable_reason() { return {}; }

int default_threads(int ranks) { return std::max(1, cpu_count() / std::max(1, ranks)); }

void run_cases(const Session& session, const std::vector<Case>& cases, const std::string& impl,
               const HarnessOptions& options, const EpOptions& ep, Report& report,
               const ProgressFn& progress) {
  report.cache = options.cache;
  const auto total = static_cast<int64_t>(cases.size());
  for (int64_t i = 0; i < total; ++i) {
    if (session.rank() == 0 && progress) {
      progress(i, total, fmt::format("case {} of {}: expert-parallel", i + 1, total));
    }
    run_case(session, cases[static_cast<size_t>(i)], i, impl, options, ep, report);
    if (report.interrupted) break;
  }
  if (session.rank() == 0 && progress) progress(total, total, "done");
}

}  // namespace moe_bench::ep
