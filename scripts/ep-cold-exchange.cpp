// Why an exchange inside an EP step is slower than the same exchange back to back (docs/ep.md,
// "Exchanges against MPI's all-to-all"): one all-to-all of BYTES per rank pair, timed (slowest
// rank, median of 60) back to back ("hot") and right after every rank streamed STREAM bytes as
// a compute stage does ("cold"), through MPI_Alltoallv and through a shared-memory window. The
// buffers are on 2 MiB pages as moe-bench's are, except in the mode that says 4 KiB.
//
//   mpicxx -O2 -DOMPI_SKIP_MPICXX -o /tmp/ep-cold-exchange scripts/ep-cold-exchange.cpp
//   mpirun -q --bind-to core --map-by core -np 2 /tmp/ep-cold-exchange [BYTES [STREAM]]
#include <mpi.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// `bytes` on 2 MiB-aligned memory, asked for huge pages or kept off them, touched.
char* buffer(size_t bytes, bool huge) {
  const size_t size = (bytes + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
  auto* p = static_cast<char*>(std::aligned_alloc(size_t{2} << 20, size));
  madvise(p, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  std::memset(p, 1, size);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const size_t bytes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 65536;
  const size_t stream = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : size_t{50} << 20;
  char* send = buffer(bytes * ranks, true);
  char* recv = buffer(bytes * ranks, true);
  char* send_small = buffer(bytes * ranks, false);  // 4 KiB pages
  char* recv_small = buffer(bytes * ranks, false);
  std::vector<int> counts(ranks, static_cast<int>(bytes)), displs(ranks);
  for (int q = 0; q < ranks; ++q) displs[q] = static_cast<int>(q * bytes);
  std::vector<float> weights(stream / sizeof(float), 1.0f);
  volatile float sink = 0;

  char* mine = nullptr;
  MPI_Win win;
  MPI_Win_allocate_shared(static_cast<MPI_Aint>(bytes * ranks), 1, MPI_INFO_NULL, MPI_COMM_WORLD,
                          &mine, &win);
  std::vector<char*> peer(ranks);
  for (int q = 0; q < ranks; ++q) {
    MPI_Aint size = 0;
    int unit = 0;
    MPI_Win_shared_query(win, q, &size, &unit, &peer[q]);
  }
  MPI_Win_lock_all(MPI_MODE_NOCHECK, win);

  auto alltoallv = [&] {
    MPI_Alltoallv(send, counts.data(), displs.data(), MPI_BYTE, recv, counts.data(), displs.data(),
                  MPI_BYTE, MPI_COMM_WORLD);
  };
  auto alltoallv_small_pages = [&] {
    MPI_Alltoallv(send_small, counts.data(), displs.data(), MPI_BYTE, recv_small, counts.data(),
                  displs.data(), MPI_BYTE, MPI_COMM_WORLD);
  };
  auto window = [&] {  // as moe-bench's --ep-exchange window: copies to the others, one barrier
    for (int q = 0; q < ranks; ++q) {
      if (q != rank) std::memcpy(peer[q] + rank * bytes, send + q * bytes, bytes);
    }
    MPI_Win_sync(win);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Win_sync(win);
  };
  auto touch_send = [&] {  // the packing that precedes an exchange
    for (size_t i = 0; i < bytes * ranks; i += 64) ++send[i];
  };
  auto compute = [&] {  // a compute stage: stream the weights
    float acc = 0;
    for (size_t i = 0; i < weights.size(); i += 16) acc += weights[i];
    sink = acc;
  };
  auto small_exchange = [&] {  // 8 KiB: above the eager limit, through the same path
    std::vector<int> small(ranks, 8192);
    MPI_Alltoallv(send, small.data(), displs.data(), MPI_BYTE, recv, small.data(), displs.data(),
                  MPI_BYTE, MPI_COMM_WORLD);
  };
  struct Mode {
    const char* name;
    std::function<void()> before, exchange;
  };
  const std::vector<Mode> modes = {
      {"alltoallv hot", touch_send, alltoallv},
      {"alltoallv hot, 4 KiB pages", [] {}, alltoallv_small_pages},
      {"alltoallv cold", [&] { compute(), touch_send(); }, alltoallv},
      {"alltoallv cold, receive buffer written first",
       [&] {
         compute(), touch_send();
         for (size_t i = 0; i < bytes * ranks; i += 64) recv[i] = 0;
       },
       alltoallv},
      {"alltoallv cold, an 8 KiB exchange first",
       [&] { compute(), touch_send(), small_exchange(); }, alltoallv},
      {"window hot", touch_send, window},
      {"window cold", [&] { compute(), touch_send(); }, window},
  };
  for (const Mode& m : modes) {
    std::vector<double> t;
    for (int i = 0; i < 60; ++i) {
      m.before();
      MPI_Barrier(MPI_COMM_WORLD);
      const double a = MPI_Wtime();
      m.exchange();
      const double mine_s = MPI_Wtime() - a;
      double slowest = 0;
      MPI_Allreduce(&mine_s, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      t.push_back(slowest);
    }
    const double s = median(t);
    if (rank == 0) {
      std::printf("%-46s %7.1f us  %6.2f GB/s to the other ranks\n", m.name, s * 1e6,
                  static_cast<double>(bytes * (ranks - 1)) / s * 1e-9);
    }
  }
  for (char* p : {send, recv, send_small, recv_small}) std::free(p);
  MPI_Win_unlock_all(win);
  MPI_Win_free(&win);
  MPI_Finalize();
}
