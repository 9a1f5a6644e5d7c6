#pragma once

#include <cstdint>

namespace moe_bench {

/// The AMX tile configuration (LDTILECFG's 64-byte palette-1 layout) that every AMX user in this
/// project loads: the cpu_amx kernels and the tile peak loop (roofline.cpp). Tiles 0-7 are each
/// 16 rows x 64 bytes. One configuration for both, so a thread that ran either still holds the
/// other's. Data only (no functions): it is included by translation units compiled for
/// different instruction sets.
struct alignas(64) AmxTileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
inline constexpr AmxTileConfig kAmxTileConfig = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
static_assert(sizeof(AmxTileConfig) == 64);

}  // namespace moe_bench
