// The a8 micro-kernels' common part (a8_isa.hpp has the layouts), included inside an instruction
// set's namespace after the vector type, kernel_math.hpp, the constant kA8PassRows and the two
// integer loops:
//   a8_sums_i8<NR, NP>(x, r0, wp, quads, out), a8_sums_q4<NR, NP>(x, r0, wp, groups, out)
// which write, for rows r0..r0+NR-1 of x (NR <= kA8PassRows) and the NP projections of the panel
// at wp, out[(r * NP + j) * kA8Cols + c] = sum over the reduction of weight x code: the weights'
// scales applied, the row's scale not.

// Rows [r, r + NR) of x on the panel, in one pass over its weights.
template <int NR, int NP>
void a8_pass(const A8Rows& x, int r, const char* wp, int64_t len, bool q4, float* out) {
  float* o = out + r * NP * kA8Cols;
  if (q4) {
    a8_sums_q4<NR, NP>(x, r, wp, len / kQ4Rows, o);
  } else {
    a8_sums_i8<NR, NP>(x, r, wp, (len + 3) / 4, o);
  }
}

// The weight-scaled sums of rows [0, n) of x on one panel of NP projections, into out: passes of
// kA8PassRows rows, and the rows left in one more.
template <int NP>
void a8_panel(const A8Rows& x, int n, const char* wp, int64_t len, bool q4, float* out) {
  for_each_pass<kA8PassRows>(n, [&]<int NR>(int r) { a8_pass<NR, NP>(x, r, wp, len, q4, out); });
}

void a8_gate_up(const A8Rows& x, int n, const char* wp, int panels, int64_t d, bool q4, Act act,
                float* h, int64_t ldh, int64_t col0, int64_t f) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  static_assert(kA8Cols % L == 0);
  const bool gated = act != Act::kGelu;
  const int np = gated ? 2 : 1;
  const int64_t panel_bytes = a8_panel_bytes(q4, np, d);
  alignas(64) float out[kA8MaxRows * 2 * kA8Cols];
  alignas(64) float tmp[2 * L];
  for (int p = 0; p < panels; ++p) {
    const int64_t c0 = col0 + p * kA8Cols;
    if (c0 >= f) break;
    const char* panel = wp + p * panel_bytes;
    if (gated) {
      a8_panel<2>(x, n, panel, d, q4, out);
    } else {
      a8_panel<1>(x, n, panel, d, q4, out);
    }
    const int64_t ncols = std::min<int64_t>(kA8Cols, f - c0);
    for (int r = 0; r < n; ++r) {
      const T s = V::set1(x.scale[r]);
      float* hr = h + r * ldh + c0;
      for (int c = 0; c < kA8Cols && c < ncols; c += L) {
        const T g = V::mul(V::load(out + r * np * kA8Cols + c), s);
        if (gated) {
          const T u = V::mul(V::load(out + (r * np + 1) * kA8Cols + c), s);
          activate(g, u, act, tmp);
        } else {
          V::store(tmp, vgelu(g));
        }
        for (int64_t i = 0; i < L && c + i < ncols; ++i) hr[c + i] = tmp[i];
      }
    }
  }
}

void a8_down(const A8Rows& h, int n, const char* wp, int panels, int64_t f, bool q4,
             const int32_t* tokens, const float* weights, float* y, int64_t ldy, int64_t col0,
             int64_t cols_end) {
  const int64_t panel_bytes = a8_panel_bytes(q4, 1, f);
  alignas(64) float out[kA8MaxRows * kA8Cols];
  for (int p = 0; p < panels; ++p) {
    const int64_t c0 = col0 + p * kA8Cols;
    if (c0 >= cols_end) break;
    a8_panel<1>(h, n, wp + p * panel_bytes, f, q4, out);
    const int64_t ncols = std::min<int64_t>(kA8Cols, cols_end - c0);
    for (int r = 0; r < n; ++r) {
      const float w = weights[r] * h.scale[r];
      float* yr = y + tokens[r] * ldy + c0;
      for (int64_t c = 0; c < ncols; ++c) yr[c] += w * out[r * kA8Cols + c];
    }
  }
}
