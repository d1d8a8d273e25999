// The c10d Gloo headers guard their declarations with USE_C10D_GLOO (torch defines it when it is
// built with Gloo; Debian's libtorch and the PyTorch wheels both are). Defined here only, so the
// precompiled torch header of every other file is unaffected.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
// NCCL likewise behind USE_C10D_NCCL; P2DPO_WITH_NCCL (CMakeLists.txt) says this build has it.
#if defined(P2DPO_WITH_NCCL) && !defined(USE_C10D_NCCL)
#define USE_C10D_NCCL 1
#endif
#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef P2DPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdlib>

#include "io/errors.h"

namespace p2dpo::train {
namespace {

int env_int(const char* name, int fallback, int min_value) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < min_value || x > 1 << 20)
    throw InputError(name, std::string("environment variable is '") + v + "', expected an integer >= " +
                               std::to_string(min_value));
  return static_cast<int>(x);
}

}  // namespace

DistributedEnv distributed_env_from_environment() {
  DistributedEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  e.master_port = env_int("MASTER_PORT", 29500, 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  if (e.rank >= e.world_size)
    throw InputError("RANK", "rank " + std::to_string(e.rank) + " is not below WORLD_SIZE " + std::to_string(e.world_size));
  if (e.master_port > 65535) throw InputError("MASTER_PORT", "not a port number");
  return e;
}

#ifdef P2DPO_WITH_NCCL
bool nccl_available() { return true; }
#else
bool nccl_available() { return false; }
#endif

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
#ifdef P2DPO_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;  // created at the first CUDA all-reduce
#endif
};

ProcessGroup::ProcessGroup(const DistributedEnv& env, bool use_nccl)
    : env_(env), use_nccl_(use_nccl), impl_(std::make_unique<Impl>()) {
  if (env.world_size < 1) throw std::invalid_argument("ProcessGroup needs WORLD_SIZE >= 1");
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<std::size_t>(env.world_size);
  so.waitWorkers = true;
  so.timeout = std::chrono::minutes(10);
  impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::minutes(30));
  // On one machine bind to loopback (hostname resolution inside containers is unreliable);
  // GLOO_SOCKET_IFNAME picks an interface for several machines, as in PyTorch.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  opts->threads = 2;
  impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, opts);
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  const auto dtype = tensors.front().scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const bool on_cuda = tensors.front().is_cuda();
  const bool nccl = use_nccl_ && on_cuda && nccl_available();
  // NCCL sums on the tensors' device; Gloo sums host copies.
  const torch::Device where = nccl ? tensors.front().device() : torch::Device(torch::kCPU);
  std::vector<torch::Tensor> flat_parts;
  for (const auto& t : tensors) flat_parts.push_back(t.detach().reshape({-1}).to(where, dtype));
  std::vector<torch::Tensor> buffer{torch::cat(flat_parts)};
  if (nccl) {
#ifdef P2DPO_WITH_NCCL
    if (!impl_->nccl) {
      // Its own key space in the shared store, beside the Gloo group's.
      auto store = c10::make_intrusive<c10d::PrefixStore>("nccl", impl_->store);
      impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env_.rank, env_.world_size,
                                                                c10d::ProcessGroupNCCL::Options::create());
    }
    // wait() orders the current CUDA stream after the reduction; the copies below follow it.
    impl_->nccl->allreduce(buffer)->wait();
#endif
    last_backend_ = "nccl";
  } else {
    impl_->group->allreduce(buffer)->wait();
    last_backend_ = "gloo";
  }
  int64_t offset = 0;
  for (auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(buffer[0].slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values) {
  if (values.empty()) return {};
  std::vector<torch::Tensor> buffer{torch::tensor(values, torch::kFloat64)};
  impl_->group->allreduce(buffer)->wait();
  const auto acc = buffer[0].accessor<double, 1>();
  std::vector<double> out(values.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = acc[static_cast<int64_t>(i)];
  return out;
}

void ProcessGroup::barrier() { impl_->group->barrier()->wait(); }

}  // namespace p2dpo::train
