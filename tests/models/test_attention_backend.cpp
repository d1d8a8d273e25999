// The --cudnn-attention switch (models/attention_backend.h): its three spellings, a clear error for
// anything else, nothing to switch on the CPU, and on a CUDA test device (P2DPO_TEST_DEVICE=cuda,
// PyTorch >= 2.4) PyTorch's own flag following the choice.
#include <gtest/gtest.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include "io/errors.h"
#include "models/attention_backend.h"
#include "models/fixture_util.h"

namespace p2dpo::models {
namespace {

TEST(AttentionBackend, ParsesItsThreeChoicesAndNamesTheFlagOtherwise) {
  EXPECT_EQ(parse_cudnn_attention("auto", "--cudnn-attention"), CudnnAttention::kAuto);
  EXPECT_EQ(parse_cudnn_attention("on", "--cudnn-attention"), CudnnAttention::kOn);
  EXPECT_EQ(parse_cudnn_attention("off", "--cudnn-attention"), CudnnAttention::kOff);
  for (const auto c : {CudnnAttention::kAuto, CudnnAttention::kOn, CudnnAttention::kOff})
    EXPECT_EQ(parse_cudnn_attention(to_string(c), "x"), c);
  try {
    parse_cudnn_attention("sometimes", "--cudnn-attention");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), "--cudnn-attention");
    EXPECT_NE(std::string(e.what()).find("sometimes"), std::string::npos);
  }
}

TEST(AttentionBackend, CpuModelsHaveNothingToSwitchAndCudaFollowsTheChoice) {
  for (const auto c : {CudnnAttention::kAuto, CudnnAttention::kOn, CudnnAttention::kOff})
    EXPECT_FALSE(apply_cudnn_attention(c, /*on_cuda=*/false).has_value());
  if (!test::test_device().is_cuda()) return;
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
  const bool before = at::globalContext().userEnabledCuDNNSDP();
  EXPECT_EQ(apply_cudnn_attention(CudnnAttention::kAuto, true), std::optional<bool>(false));
  EXPECT_FALSE(at::globalContext().userEnabledCuDNNSDP());
  EXPECT_EQ(apply_cudnn_attention(CudnnAttention::kOn, true), std::optional<bool>(true));
  EXPECT_TRUE(at::globalContext().userEnabledCuDNNSDP());
  EXPECT_EQ(apply_cudnn_attention(CudnnAttention::kOff, true), std::optional<bool>(false));
  EXPECT_FALSE(at::globalContext().userEnabledCuDNNSDP());
  set_cudnn_attention(before);
#else
  EXPECT_FALSE(apply_cudnn_attention(CudnnAttention::kAuto, true).has_value());
#endif
}

}  // namespace
}  // namespace p2dpo::models
