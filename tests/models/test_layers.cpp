// The small building blocks: LoRA on Linear (PEFT's formula; the trainer builds on it) and
// RMSNorm's cast-back-before-weight order.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "models/fixture_util.h"
#include "models/layers.h"

using namespace p2dpo;

TEST(Linear, LoraAddsScaledLowRankUpdateAndCanBeDisabled) {
  torch::manual_seed(0);
  models::Linear l;
  l.weight = torch::randn({5, 4});
  l.bias = torch::randn({5});
  auto x = torch::randn({3, 4});
  auto base = l(x);
  EXPECT_TRUE(torch::allclose(base, torch::matmul(x, l.weight.t()) + l.bias));
  auto lora = std::make_shared<models::LoraWeights>();
  lora->A = torch::randn({2, 4});
  lora->B = torch::randn({5, 2});
  lora->scaling = 16.0 / 2.0;  // PEFT: lora_alpha / r
  l.lora = lora;
  auto want = base + torch::matmul(torch::matmul(x, lora->A.t()), lora->B.t()) * lora->scaling;
  EXPECT_LE((l(x) - want).abs().max().item<double>(), 1e-5);
  lora->enabled = false;
  EXPECT_TRUE(torch::equal(l(x), base));
  // A zero B (PEFT's initialisation) leaves the layer unchanged.
  lora->enabled = true;
  lora->B = torch::zeros({5, 2});
  EXPECT_TRUE(torch::allclose(l(x), base));
}

// runtime.lora_precision: "autocast" runs the adapter in the activations' dtype from fp32 masters
// (torch.autocast / DeepSpeed bf16), "float32" in fp32 as PEFT's forward does without autocast.
TEST(Linear, LoraAutocastRunsInTheInputDtypeFromFloat32Masters) {
  torch::manual_seed(0);
  const auto dev = test::test_device();
  models::Linear l;
  l.weight = torch::randn({6, 8}).to(dev);
  auto lora = std::make_shared<models::LoraWeights>();
  lora->A = (torch::randn({2, 8}) * 0.3).to(dev).requires_grad_(true);
  lora->B = (torch::randn({6, 2}) * 0.3).to(dev).requires_grad_(true);
  lora->scaling = 2.0;
  l.lora = lora;
  auto run = [&](const torch::Tensor& x, bool autocast) {
    lora->autocast = autocast;
    lora->A.mutable_grad() = torch::Tensor();
    lora->B.mutable_grad() = torch::Tensor();
    auto y = l(x);
    (y.to(torch::kFloat32) * torch::arange(6, torch::kFloat32).to(dev)).sum().backward();
    return std::make_tuple(y.detach(), lora->A.grad().clone(), lora->B.grad().clone());
  };
  // An fp32 model: the same ops either way, to the bit, gradients included.
  const auto x32 = torch::randn({3, 5, 8}).to(dev);
  const auto [y_fp, ga_fp, gb_fp] = run(x32, false);
  const auto [y_ac, ga_ac, gb_ac] = run(x32, true);
  EXPECT_TRUE(torch::equal(y_fp, y_ac));
  EXPECT_TRUE(torch::equal(ga_fp, ga_ac));
  EXPECT_TRUE(torch::equal(gb_fp, gb_ac));
  // A bf16 model: autocast is the bf16 formula exactly, and its gradients reach the fp32 masters.
  l.weight = l.weight.to(torch::kBFloat16);
  const auto x16 = x32.to(torch::kBFloat16);
  const auto [y16_fp, ga16_fp, gb16_fp] = run(x16, false);
  const auto [y16_ac, ga16_ac, gb16_ac] = run(x16, true);
  EXPECT_EQ(y16_ac.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(y16_fp.scalar_type(), torch::kBFloat16);
  const auto want = torch::linear(x16, l.weight) +
                    torch::linear(torch::linear(x16, lora->A.detach().to(torch::kBFloat16)),
                                  lora->B.detach().to(torch::kBFloat16)).mul(2.0);
  EXPECT_TRUE(torch::equal(y16_ac, want));
  EXPECT_EQ(ga16_ac.scalar_type(), torch::kFloat32);
  EXPECT_EQ(gb16_ac.scalar_type(), torch::kFloat32);
  // The two precisions agree to bf16 rounding, and they do round differently.
  EXPECT_LE((y16_ac.to(torch::kFloat32) - y16_fp.to(torch::kFloat32)).abs().max().item<double>(),
            0.05 * y16_fp.to(torch::kFloat32).abs().max().item<double>());
  EXPECT_FALSE(torch::equal(y16_ac, y16_fp));
  EXPECT_LE((ga16_ac - ga16_fp).abs().max().item<double>(), 0.05 * ga16_fp.abs().max().item<double>());
  EXPECT_LE((gb16_ac - gb16_fp).abs().max().item<double>(), 0.05 * gb16_fp.abs().max().item<double>());
}

TEST(RMSNorm, NormalisesInFloat32ThenCastsBeforeTheWeight) {
  models::RMSNorm n;
  n.weight = torch::tensor({2.0f, 0.5f});
  n.eps = 1e-6;
  auto x = torch::tensor({{3.0f, 4.0f}});
  const double r = 1.0 / std::sqrt((9.0 + 16.0) / 2.0 + 1e-6);
  auto y = n(x);
  EXPECT_NEAR(y[0][0].item<double>(), 2.0 * 3.0 * r, 1e-6);
  EXPECT_NEAR(y[0][1].item<double>(), 0.5 * 4.0 * r, 1e-6);
  auto yb = n(x.to(torch::kBFloat16));
  EXPECT_EQ(yb.scalar_type(), torch::kFloat32);  // bf16 input * fp32 weight promotes, as in HF
}

TEST(RMSNorm, OnCudaMatchesHfOrder) {
  // On a CUDA test device (P2DPO_TEST_DEVICE=cuda) the norm is PyTorch's rms_norm (PyTorch >= 2.4):
  // within float rounding of HF's order in fp32 and within two bf16 ulps in bf16. On the CPU it is
  // HF's order exactly.
  torch::manual_seed(3);
  const auto device = test::test_device();
  models::RMSNorm n;
  n.eps = 1e-5;
  auto x = torch::randn({4, 7, 64}) * 3.0;
  auto w = torch::randn({64});
  auto hf_order = [&](const torch::Tensor& xi, const torch::Tensor& wi) {
    auto x32 = xi.to(torch::kFloat32);
    auto y = (x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + n.eps)).to(xi.scalar_type());
    return wi * y;
  };
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto xi = x.to(dtype).to(device), wi = w.to(dtype).to(device);
    n.weight = wi;
    const auto got = n(xi).to(torch::kCPU).to(torch::kFloat32);
    const auto want = hf_order(xi, wi).to(torch::kCPU).to(torch::kFloat32);
    if (!device.is_cuda()) {
      EXPECT_TRUE(torch::equal(got, want));
      continue;
    }
    const double tol = dtype == torch::kFloat32 ? 1e-5 : 2.0 / 128.0;  // bf16: 8 significant bits
    EXPECT_LE(((got - want).abs() / (want.abs() + 1e-3)).max().item<double>(), tol) << dtype;
  }
}
