// libusb's events on the JS thread's libuv loop, as usbmuxd handles them on its poll loop: a
// uv_poll_t per libusb pollfd (libusb_get_pollfds, kept current with libusb_set_pollfd_notifiers),
// a uv_timer_t for libusb's next timeout where its pollfds do not cover timeouts (the vusb library;
// real libusb on Linux has a timerfd among them), and one round of UsbHost::HandleEventsNow per
// loop iteration in which any of them fired (a uv_check_t, so several ready descriptors cost one
// round). The round's events are delivered right after it, on the same thread, with no queue
// hand-over and no wake-up. Without hotplug, a uv_timer_t runs UsbHost::PollDevices on libuv's
// pool every kPollIntervalMs (listing devices may wait for a simulated device that answers on the
// JS thread).
//
// Threads. Everything here runs on the loop's thread, except Wake and the pollfd notifiers, which
// libusb may call on any thread (a worker inside a synchronous call): off the loop's thread a
// notifier only marks the set stale and wakes the loop (a uv_async_t), which then re-reads
// libusb_get_pollfds. libuv watches duplicates of libusb's descriptors (usb-loop.cc, Watch), so a
// descriptor libusb closes on another thread never leaves libuv watching a number Node reuses.
// Every handle is unref'd: the loop alone never keeps Node running.
#ifndef MUXWIRE_NATIVE_USB_LOOP_H_
#define MUXWIRE_NATIVE_USB_LOOP_H_

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "usb-host.h"

namespace muxwire {

class UsbLoop {
 public:
  // Drives `host` (started, no event thread) from `loop`; `deliver` takes and hands out the queued
  // events after a round that queued some. Null when this libusb cannot be polled from outside
  // (no pollfd API, or no pollfds: Windows); the caller then uses UsbHost::StartThread.
  static std::shared_ptr<UsbLoop> Attach(uv_loop_t* loop, std::shared_ptr<UsbHost> host,
                                         std::function<void()> deliver);
  ~UsbLoop();
  UsbLoop(const UsbLoop&) = delete;
  UsbLoop& operator=(const UsbLoop&) = delete;

  // On the loop's thread, before UsbHost::Stop: unregisters the notifiers and closes every handle.
  // No callback runs after it returns. Idempotent.
  void Detach();
  // After a submission with a timeout: the timer may have to fire sooner.
  void Rearm();
  // Any thread: asks for a round on the next loop iteration.
  void Wake();

 public:
  struct Watch;

 private:
  UsbLoop(uv_loop_t* loop, std::shared_ptr<UsbHost> host, std::function<void()> deliver);

  static void OnAdded(int fd, short events, void* self);
  static void OnRemoved(int fd, void* self);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnCheck(uv_check_t* handle);
  static void OnTimer(uv_timer_t* handle);
  static void OnPollTimer(uv_timer_t* handle);
  static void OnAsync(uv_async_t* handle);

  bool OnLoopThread() const { return std::this_thread::get_id() == thread_; }
  void Start(int fd, short events);
  void Park(int fd);
  void Sweep();
  void CloseWatch(Watch* w);
  // Re-reads libusb_get_pollfds; false when libusb gives none.
  bool Resync();
  void RequestRound();
  void Round();
  void ArmTimer();

  uv_loop_t* loop_;
  std::shared_ptr<UsbHost> host_;
  const LibusbApi* api_;
  libusb_context* ctx_;
  std::function<void()> deliver_;
  std::thread::id thread_;
  bool timeouts_in_pollfds_ = false;
  bool detached_ = false;
  bool round_pending_ = false;
  bool parked_ = false;  // some watch is parked (Park)
  std::atomic<bool> stale_{false};  // a notifier ran off the loop's thread
  std::mutex async_mu_;             // orders uv_async_send against the async handle's close
  bool async_open_ = false;         // under async_mu_
  std::unordered_map<int, Watch*> watches_;
  // A device listing (PollDevices) is under way on libuv's pool.
  std::shared_ptr<std::atomic<bool>> polling_ = std::make_shared<std::atomic<bool>>(false);
  // Each handle is its own allocation, freed by its close callback (which never touches this).
  uv_check_t* check_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  uv_timer_t* poll_timer_ = nullptr;
  uv_async_t* async_ = nullptr;
};

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_LOOP_H_
