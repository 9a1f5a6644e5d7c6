#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace moe_bench {

/// 64-byte aligned storage, 2 MiB aligned and asked for transparent huge pages when at least
/// `huge_from` bytes, sized by resize() (contents undefined until written).
template <typename T>
class Aligned {
 public:
  static constexpr size_t kHuge = size_t{2} << 20;

  /// Huge pages are asked for before first touch: streaming through 4 KiB pages costs TLB
  /// misses (weights in a decode kernel; buffers that another process reads through the kernel).
  void resize(int64_t n, size_t huge_from = kHuge) {
    const auto raw = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
    const size_t align = raw >= huge_from ? kHuge : 64;
    const size_t bytes = (raw + align - 1) / align * align;
    data_.reset(static_cast<T*>(std::aligned_alloc(align, bytes)));
    if (!data_) throw std::bad_alloc();
    if (align == kHuge) madvise(data_.get(), bytes, MADV_HUGEPAGE);
    size_ = n;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  int64_t size() const { return size_; }
  T& operator[](int64_t i) { return data_.get()[i]; }
  const T& operator[](int64_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  int64_t size_ = 0;
};

}  // namespace moe_bench
