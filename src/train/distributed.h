#pragma once
// Data parallelism over torch.distributed's c10d, launched by torchrun: every rank runs the same
// program, reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from the environment, and the ranks
// meet at a TCPStore on MASTER_ADDR:MASTER_PORT (rank 0 hosts it, as torchrun's static rendezvous).
//
// The collectives go through a Gloo process group. Tensors on CUDA are all-reduced through a host
// copy (one flat buffer per call), so the same code runs on CPU and GPU; an NCCL group is not wired
// yet (see the trainer notes). The heavy c10d headers stay in distributed.cpp.
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

class ProcessGroup {
 public:
  // Joins the group (blocks until every rank has). world_size must be > 1.
  explicit ProcessGroup(const DistributedEnv& env);
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

 private:
  struct Impl;
  DistributedEnv env_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2dpo::train
