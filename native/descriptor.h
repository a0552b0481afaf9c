// Duplicating a socket descriptor for the daemon's second reader of a client (src/accel/
// client-reader.ts): a net.Socket over the copy reads into memory the daemon reuses, while the
// original keeps writing. Knows nothing of Node.
#pragma once

namespace muxwire {

// A new descriptor for the same open socket, close-on-exec, or -errno (EBADF, EMFILE…).
int DupCloexec(int fd);

}  // namespace muxwire
