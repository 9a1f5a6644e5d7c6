// One rank's part of an expert-parallel layer, stage by stage: route, pack and exchange the
// token records (MPI_Alltoallv or shared-memory windows), compute the held experts, send the rows
// back and combine. Internal to lib/ep: included by ep.cpp, which measures and reports it.
#pragma once

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "ep.hpp"
#include "moe_bench/aligned.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/placement.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/routing.hpp"

namespace moe_bench::ep::detail {

inline void check_mpi(int code, const char* what) {
  if (code != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    throw std::runtime_error(fmt::format("{} failed: {}", what, std::string(text, len)));
  }
}

inline double now() { return MPI_Wtime(); }

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

}  // namespace moe_bench::ep::detail
