// libusb's events on the JS thread's libuv loop (usb-loop.h).
#include "usb-loop.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <vector>

namespace muxwire {
namespace {

// Where libusb's pollfds do not cover its timeouts, the timer fires at least this often, as the
// event thread's handle_events timeout did: a deadline set on another thread (a worker's
// synchronous call noticing a new device) is then met this late at worst.
constexpr uint64_t kLongestWaitMs = 100;

template <typename T>
void FreeHandle(uv_handle_t* handle) {
  delete reinterpret_cast<T*>(handle);
}

template <typename T>
void CloseHandle(T*& handle) {
  if (handle == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(handle), &FreeHandle<T>);
  handle = nullptr;
}

// A watch's close callback: the duplicate goes with the handle.
void FreeWatch(uv_handle_t* handle);

struct PollWork {
  uv_work_t req;
  std::shared_ptr<UsbHost> host;
  std::shared_ptr<std::atomic<bool>> busy;
};

}  // namespace

// One libusb pollfd. libuv watches a duplicate of libusb's descriptor, never the descriptor
// itself: libusb may close its own at any time, even on another thread (vusb, when a worker's
// synchronous call finds a device gone), and until this loop has heard of it, a descriptor
// number libuv still watched could be handed to a new socket of Node's, which libuv would then
// confuse with it. The duplicate keeps the number this watch's until the watch is closed.
struct UsbLoop::Watch {
  uv_poll_t handle;
  int own = -1;         // the duplicate libuv watches
  dev_t dev = 0;        // the socket libusb's descriptor named when the watch began
  ino_t ino = 0;
  bool parked = false;  // removed by libusb on this thread; closed at the end of the round
};

namespace {
void FreeWatch(uv_handle_t* handle) {
  auto* w = reinterpret_cast<UsbLoop::Watch*>(handle);
  close(w->own);
  delete w;
}
}  // namespace

std::shared_ptr<UsbLoop> UsbLoop::Attach(uv_loop_t* loop, std::shared_ptr<UsbHost> host,
                                         std::function<void()> deliver) {
  const LibusbApi* api = host->api();
  if (loop == nullptr || host->context() == nullptr || api->get_pollfds == nullptr ||
      api->set_pollfd_notifiers == nullptr || api->get_next_timeout == nullptr) {
    return nullptr;
  }
  std::shared_ptr<UsbLoop> self(new (std::nothrow) UsbLoop(loop, host, std::move(deliver)));
  if (!self) return nullptr;
  UsbLoop* me = self.get();
  me->check_ = new (std::nothrow) uv_check_t;
  me->timer_ = new (std::nothrow) uv_timer_t;
  me->async_ = new (std::nothrow) uv_async_t;
  if (me->check_ == nullptr || me->timer_ == nullptr || me->async_ == nullptr) {
    delete me->check_;
    delete me->timer_;
    delete me->async_;
    me->check_ = nullptr;
    me->timer_ = nullptr;
    me->async_ = nullptr;
    me->detached_ = true;  // nothing to close; the destructor leaves libusb alone
    return nullptr;
  }
  uv_check_init(loop, me->check_);
  uv_timer_init(loop, me->timer_);
  uv_async_init(loop, me->async_, &UsbLoop::OnAsync);
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(me->check_),
                         reinterpret_cast<uv_handle_t*>(me->timer_),
                         reinterpret_cast<uv_handle_t*>(me->async_)}) {
    h->data = me;
    uv_unref(h);
  }
  me->async_open_ = true;
  // Notifiers first, then the list: a change between the two is seen twice, never missed.
  api->set_pollfd_notifiers(me->ctx_, &UsbLoop::OnAdded, &UsbLoop::OnRemoved, me);
  if (!me->Resync()) {
    me->Detach();
    return nullptr;
  }
  me->timeouts_in_pollfds_ =
      api->pollfds_handle_timeouts != nullptr && api->pollfds_handle_timeouts(me->ctx_) == 1;
  if (host->polls()) {
    me->poll_timer_ = new (std::nothrow) uv_timer_t;
    if (me->poll_timer_ == nullptr) {
      me->Detach();
      return nullptr;
    }
    uv_timer_init(loop, me->poll_timer_);
    me->poll_timer_->data = me;
    uv_unref(reinterpret_cast<uv_handle_t*>(me->poll_timer_));
    uv_timer_start(me->poll_timer_, &UsbLoop::OnPollTimer, kPollIntervalMs, kPollIntervalMs);
  }
  host->SetWake([me] { me->Wake(); });
  // Whatever libusb_init and hotplug registration left pending (vusb's ENUMERATE arrivals).
  me->RequestRound();
  return self;
}

UsbLoop::UsbLoop(uv_loop_t* loop, std::shared_ptr<UsbHost> host, std::function<void()> deliver)
    : loop_(loop),
      host_(std::move(host)),
      api_(host_->api()),
      ctx_(host_->context()),
      deliver_(std::move(deliver)),
      thread_(std::this_thread::get_id()) {}

UsbLoop::~UsbLoop() {
  Detach();
}

void UsbLoop::Detach() {
  if (detached_) return;
  detached_ = true;
  // After these return, neither libusb nor the host calls into this object again.
  api_->set_pollfd_notifiers(ctx_, nullptr, nullptr, nullptr);
  host_->SetWake(nullptr);
  {
    std::lock_guard<std::mutex> lock(async_mu_);
    async_open_ = false;
    CloseHandle(async_);
  }
  for (auto& [fd, w] : watches_) CloseWatch(w);
  watches_.clear();
  CloseHandle(check_);
  CloseHandle(timer_);
  CloseHandle(poll_timer_);
}

// ---- pollfds ----

void UsbLoop::OnAdded(int fd, short events, void* self) {
  auto* me = static_cast<UsbLoop*>(self);
  if (me->OnLoopThread()) {
    me->Start(fd, events);
  } else {
    me->stale_ = true;
    me->Wake();
  }
}

void UsbLoop::OnRemoved(int fd, void* self) {
  auto* me = static_cast<UsbLoop*>(self);
  if (me->OnLoopThread()) {
    // Parked, not closed: libusb reports a change of events as a removal and an addition, which
    // then revives the watch instead of duplicating the descriptor again.
    me->Park(fd);
  } else {
    me->stale_ = true;
    me->Wake();
  }
}

void UsbLoop::Start(int fd, short events) {
  if (detached_) return;
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  Watch* w = nullptr;
  auto found = watches_.find(fd);
  if (found != watches_.end()) {
    w = found->second;
    // The number may name another file by now (closed and reused behind this loop's back). Only
    // a socket's inode tells: eventfds, timerfds and inotify descriptors share one anonymous
    // inode, so theirs are watched anew (they change rarely, never with each burst of data).
    if (!S_ISSOCK(st.st_mode) || w->dev != st.st_dev || w->ino != st.st_ino) {
      watches_.erase(found);
      CloseWatch(w);
      w = nullptr;
    }
  }
  if (w == nullptr) {
    w = new (std::nothrow) Watch;
    if (w == nullptr) return;
    w->own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (w->own < 0 || uv_poll_init(loop_, &w->handle, w->own) != 0) {
      if (w->own >= 0) close(w->own);
      delete w;
      return;
    }
    w->dev = st.st_dev;
    w->ino = st.st_ino;
    w->handle.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&w->handle));
    watches_[fd] = w;
  }
  w->parked = false;
  const int flags = ((events & POLLIN) != 0 ? UV_READABLE : 0) |
                    ((events & POLLOUT) != 0 ? UV_WRITABLE : 0);
  uv_poll_start(&w->handle, flags, &UsbLoop::OnPoll);
}

void UsbLoop::Park(int fd) {
  auto found = watches_.find(fd);
  if (found == watches_.end()) return;
  uv_poll_stop(&found->second->handle);
  found->second->parked = true;
  parked_ = true;
}

void UsbLoop::Sweep() {
  if (!parked_) return;
  parked_ = false;
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (it->second->parked) {
      CloseWatch(it->second);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

void UsbLoop::CloseWatch(Watch* w) {
  uv_close(reinterpret_cast<uv_handle_t*>(&w->handle), &FreeWatch);
}

bool UsbLoop::Resync() {
  const libusb_pollfd** list = api_->get_pollfds(ctx_);
  if (list == nullptr) return false;
  for (auto& [fd, w] : watches_) {
    bool listed = false;
    for (const libusb_pollfd** p = list; *p != nullptr; p++) listed |= (*p)->fd == fd;
    if (!listed) {
      uv_poll_stop(&w->handle);
      w->parked = true;
      parked_ = true;
    }
  }
  for (const libusb_pollfd** p = list; *p != nullptr; p++) Start((*p)->fd, (*p)->events);
  Sweep();
  if (api_->free_pollfds != nullptr) {
    api_->free_pollfds(list);
  } else {
    std::free(static_cast<void*>(list));
  }
  return true;
}

// ---- rounds ----

void UsbLoop::OnPoll(uv_poll_t* handle, int status, int) {
  auto* me = static_cast<UsbLoop*>(handle->data);
  // An error would fire on every iteration: stop watching; the round re-reads the set.
  if (status < 0) {
    uv_poll_stop(handle);
    me->stale_ = true;
  }
  me->RequestRound();
}

void UsbLoop::OnTimer(uv_timer_t* handle) {
  static_cast<UsbLoop*>(handle->data)->RequestRound();
}

void UsbLoop::OnAsync(uv_async_t* handle) {
  static_cast<UsbLoop*>(handle->data)->RequestRound();
}

void UsbLoop::Wake() {
  std::lock_guard<std::mutex> lock(async_mu_);
  if (async_open_) uv_async_send(async_);
}

void UsbLoop::RequestRound() {
  if (detached_ || round_pending_) return;
  round_pending_ = true;
  uv_check_start(check_, &UsbLoop::OnCheck);
}

void UsbLoop::OnCheck(uv_check_t* handle) {
  static_cast<UsbLoop*>(handle->data)->Round();
}

void UsbLoop::Round() {
  round_pending_ = false;
  uv_check_stop(check_);
  if (stale_.exchange(false)) Resync();
  const bool queued = host_->HandleEventsNow();
  // The deliverer calls into JavaScript, which may stop the host (and detach this) meanwhile.
  if (queued && !detached_) deliver_();
  if (detached_) return;
  // Descriptors libusb dropped in this round (or since the last) stay dropped: their duplicates go.
  Sweep();
  ArmTimer();
}

void UsbLoop::Rearm() {
  if (!detached_) ArmTimer();
}

void UsbLoop::ArmTimer() {
  if (timeouts_in_pollfds_) return;
  uint64_t wait = kLongestWaitMs;
  timeval tv{0, 0};
  if (api_->get_next_timeout(ctx_, &tv) == 1) {
    const uint64_t ms = static_cast<uint64_t>(tv.tv_sec) * 1000 +
                        (static_cast<uint64_t>(tv.tv_usec) + 999) / 1000;
    wait = std::min(wait, ms);
  }
  uv_timer_start(timer_, &UsbLoop::OnTimer, wait, 0);
}

// ---- polling for devices (no hotplug) ----

void UsbLoop::OnPollTimer(uv_timer_t* handle) {
  auto* me = static_cast<UsbLoop*>(handle->data);
  // One listing at a time: a slow one (vusb waits for devices mid-discovery) is not stacked on.
  if (me->polling_->exchange(true)) return;
  auto* work = new (std::nothrow) PollWork{{}, me->host_, me->polling_};
  if (work == nullptr) {
    *me->polling_ = false;
    return;
  }
  work->req.data = work;
  // The work holds the host, not this: it may finish after Detach (PollDevices then does nothing).
  const int r = uv_queue_work(
      me->loop_, &work->req,
      [](uv_work_t* req) { static_cast<PollWork*>(req->data)->host->PollDevices(); },
      [](uv_work_t* req, int) {
        auto* done = static_cast<PollWork*>(req->data);
        *done->busy = false;
        delete done;
      });
  if (r != 0) {
    *me->polling_ = false;
    delete work;
  }
}

}  // namespace muxwire
