// SO_PEERCRED on Linux; getpeereid() (no pid) on the BSDs and macOS; ENOSYS elsewhere.
#include "peer-cred.h"

#include <cerrno>

#if defined(__linux__)
#include <sys/socket.h>
#include <sys/types.h>
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#include <sys/types.h>
#include <unistd.h>
#endif

namespace muxwire {

int ReadPeerCred(int fd, PeerCred* out) {
#if defined(__linux__)
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return errno;
  if (len != sizeof(cred)) return EINVAL;
  out->pid = cred.pid;
  out->uid = cred.uid;
  out->gid = cred.gid;
  return 0;
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) != 0) return errno;
  out->pid = -1;
  out->uid = uid;
  out->gid = gid;
  return 0;
#else
  (void)fd;
  (void)out;
  return ENOSYS;
#endif
}

}  // namespace muxwire
