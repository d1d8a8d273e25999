#pragma once
// Data parallelism over torch.distributed's c10d, launched by torchrun: every rank runs the same
// program, reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from the environment, and the ranks
// meet at a TCPStore on MASTER_ADDR:MASTER_PORT (rank 0 hosts it, as torchrun's static rendezvous).
//
// Host tensors and metrics go through a Gloo process group. CUDA tensors go through an NCCL group
// on their device where this build has one (a CUDA build of PyTorch with NCCL: P2DPO_WITH_NCCL)
// and the caller allows it, else through Gloo via a host copy (one flat buffer per call), so the
// same code runs on CPU and GPU. The heavy c10d headers stay in distributed.cpp.
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace p2dpo::train {

struct DistributedEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The torchrun variables; WORLD_SIZE unset means one process. Malformed values throw
// InputError("RANK" / "WORLD_SIZE" / ..., ...).
DistributedEnv distributed_env_from_environment();

// Whether this build can sum CUDA tensors over NCCL.
bool nccl_available();

class ProcessGroup {
 public:
  // Joins the group (blocks until every rank has). A world of one is allowed (tests). With
  // `use_nccl`, CUDA tensors are summed over NCCL when nccl_available() (the group is created at the
  // first such call, which every rank makes together).
  explicit ProcessGroup(const DistributedEnv& env, bool use_nccl = true);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  // In-place sum over ranks of each tensor (all flattened into one float32/float64 buffer per call;
  // every rank must pass the same shapes in the same order).
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // Sum over ranks of a host vector of doubles (metrics).
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  void barrier();
  // "nccl" or "gloo": what the last all_reduce_sum of tensors used ("" before any).
  const std::string& last_backend() const { return last_backend_; }

 private:
  struct Impl;
  DistributedEnv env_;
  bool use_nccl_ = true;
  std::string last_backend_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2dpo::train
