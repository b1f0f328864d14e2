// The microprocess serve loop: wait on the request ring, call the module, write the reply.
#pragma once

#include <cstdint>

#include "mp/module.h"
#include "shm/module_heap.h"
#include "shm/ring.h"

namespace mp::microproc {

struct WorkerLoopOptions {
  uint32_t spin_iterations = 2000;  // checks of the ring before sleeping on the futex
};

// Serves calls from `ring` with `module` over `heap` until a stop frame arrives, then returns.
// Runs inside the sandbox: allocates only through malloc (brk/mmap are allowed), makes no
// syscalls but futex, write(doorbell_fd) and memory management.
void ServeCalls(shm::RingFile& ring, int doorbell_fd, const mp_module& module, const mp_heap& heap,
                const WorkerLoopOptions& options);

// The module's view of a validated heap. `view` must outlive the result.
mp_heap MakeModuleHeap(const shm::HeapView& view);

}  // namespace mp::microproc
