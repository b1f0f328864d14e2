// Messages with file descriptors attached (SCM_RIGHTS) over Unix sockets.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "shm/unique_fd.h"

namespace mp::microproc {

// Sends `bytes` and `fds` in one message.
absl::Status SendWithFds(int sock, std::span<const std::byte> bytes, std::span<const int> fds);

// Receives one message into `buffer` and up to `max_fds` descriptors. Returns the byte count,
// 0 at end of stream. Waits at most `timeout_ms` (-1: forever) for the message.
absl::StatusOr<size_t> ReceiveWithFds(int sock, std::span<std::byte> buffer,
                                      std::vector<UniqueFd>* fds, size_t max_fds,
                                      int timeout_ms);

}  // namespace mp::microproc
