// The integer codes that travel from Python into the kernels, one enum each.
// Mirrored by attnkernels/_core/modes.py (tests/test_modes.py checks that the
// two agree, name by name).
#pragma once
#include <cstdint>

namespace attnkernels {

enum Activation : int { kIdentity = 0, kReLU = 1, kSiLU = 2, kHardswish = 3 };
enum Gate : int { kSigmoid = 0, kHardSigmoid = 1 };
// A squeeze's channel pool: the mean, or 0.5 * mean + 0.5 * max.
enum Pool : int { kAvg = 0, kAvgMax = 1 };
// How a gate network's BatchNorm normalises: not at all, with the batch's
// statistics, or with the running ones.
enum BatchNormMode : int64_t { kBnNone = 0, kBnBatch = 1, kBnRunning = 2 };

}  // namespace attnkernels
