// The credentials of the process at the other end of a connected UNIX socket, as the kernel
// recorded them at connect() time (Linux SO_PEERCRED). Used by the daemon's access policy
// (src/daemon/access-policy.ts); knows nothing of Node.
#pragma once

#include <cstdint>

namespace muxwire {

struct PeerCred {
  int64_t pid;
  int64_t uid;
  int64_t gid;
};

// Fills `out` for socket `fd` and returns 0, or returns the errno of the failure (EBADF,
// ENOTSOCK, ENOTCONN…; ENOSYS where the platform has no way to ask).
int ReadPeerCred(int fd, PeerCred* out);

}  // namespace muxwire
