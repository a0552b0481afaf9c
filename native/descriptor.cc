// fcntl(F_DUPFD_CLOEXEC): the copy is never inherited by a program the daemon starts.
#include "descriptor.h"

#include <cerrno>

#if defined(_WIN32)
namespace muxwire {
int DupCloexec(int fd) {
  (void)fd;
  return -ENOSYS;
}
}  // namespace muxwire
#else
#include <fcntl.h>

namespace muxwire {

int DupCloexec(int fd) {
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return copy >= 0 ? copy : -errno;
}

}  // namespace muxwire
#endif
