// The native USB pipeline (issue 6), knowing nothing of Node: one libusb context and the handling
// of its events (by the caller's loop, or a thread of its own), discovery of Apple devices (hotplug, or polling where libusb has no
// hotplug, as usbmuxd: usbmux.md §1.7), device handles, asynchronous control transfers, a set of
// bulk IN transfers kept in flight per device, and bulk OUT transfers with usbmuxd's zero-length-
// packet rule (§1.4). usb-binding.cc puts it in front of JavaScript.
//
// libusb's events are handled either by the caller's poll loop (usb-loop.h, on the JS thread: the
// loop watches libusb's pollfds and calls HandleEventsNow when one is ready, as usbmuxd does), or,
// where libusb cannot be polled from outside (no pollfd API, Windows) or the caller asks for it, by
// a thread of the host's own (StartThread). Everything the handler learns becomes an event record
// in a queue. Records pushed during HandleEventsNow are left for its caller to take; others (a
// worker's discovery, the event thread's rounds) call `notify` when the queue goes from empty to
// not empty, and the binding drains it on the JS thread in one batch.
//
// Event record (kUsbEventFields u32 each, shared with src/accel/usb-host.ts):
//   [0] kind     [1] device id   [2] handle id   [3] request id   [4] status (i32)
//   [5] length   [6] aux1        [7] aux2
//   kUsbArrived      device; aux1 = idVendor << 16 | idProduct;
//                    aux2 = bus << 16 | address << 8 | libusb speed
//   kUsbLeft         device
//   kUsbInData       handle; one completed IN transfer: `length` bytes at offset aux1 of the
//                    handle's IN region (StartIn); aux2 = the transfer's index, which the
//                    receiver gives back with ReturnIn once it is done with the bytes
//   kUsbInEnd        handle; status = the libusb transfer status that stopped the IN pipe
//   kUsbOutDone      handle, request; status = transfer status; length = bytes sent
//   kUsbControlDone  handle, request; status = transfer status; `data` = the IN data stage
//   kUsbClosed       handle (every transfer finished, interface released, handle closed)
//
// Threads. The JS thread submits (libusb_submit_transfer is thread-safe and never blocks); calls
// that may block on the device (open, get/set configuration, claim, device polling) run on worker
// threads; the event handler (the JS thread's loop, or the event thread) runs callbacks and reaps
// closed handles. A real libusb may also run callbacks on a worker inside a synchronous call. One mutex guards the maps, handles and the
// queue; libusb calls that may call back or block are made with it released, except submit and
// cancel, which never call back synchronously.
#ifndef MUXWIRE_NATIVE_USB_HOST_H_
#define MUXWIRE_NATIVE_USB_HOST_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "usb-libusb.h"

namespace muxwire {

constexpr size_t kUsbEventFields = 8;
constexpr uint32_t kUsbArrived = 1;
constexpr uint32_t kUsbLeft = 2;
constexpr uint32_t kUsbInData = 3;
constexpr uint32_t kUsbInEnd = 4;
constexpr uint32_t kUsbOutDone = 5;
constexpr uint32_t kUsbControlDone = 6;
constexpr uint32_t kUsbClosed = 7;

// Apple's vendor ID: discovery reports nothing else (usbmuxd registers its hotplug callback for
// VID 0x05AC and any PID; the PID ranges are checked in TypeScript, usb-ids.ts).
constexpr int kAppleVendorId = 0x05AC;
// usbmuxd's DEVICE_POLL_TIME, for a libusb without hotplug.
constexpr int kPollIntervalMs = 1000;
// Bounds of the IN pipeline (the defaults, 3 × 16384, are usbmuxd's NUM_RX_LOOPS × USB_MRU).
constexpr uint32_t kMaxInTransfers = 64;
// IN buffers per transfer kept in flight: while the receiver holds the buffers of one batch, as
// many others are in flight, so the pipe never waits for the receiver (StartIn).
constexpr uint32_t kInBuffersPerTransfer = 4;
constexpr uint32_t kMaxInTransferSize = 1u << 20;
// Largest OUT transfer: usbmuxd's USB_MTU, the largest mux packet a host sends (usbmux.md §1.5).
constexpr uint32_t kMaxOutTransfer = 49152;

struct UsbEvent {
  uint32_t kind = 0;
  uint32_t device = 0;
  uint32_t handle = 0;
  uint32_t request = 0;
  int32_t status = 0;
  uint32_t length = 0;
  uint32_t aux1 = 0;
  uint32_t aux2 = 0;
  // malloc'd bytes whose ownership travels with the event (kUsbControlDone).
  uint8_t* data = nullptr;
};

class UsbHost {
 public:
  // A host on `api`; the libusb context is created by Start. Null when out of memory.
  static std::shared_ptr<UsbHost> Create(const LibusbApi* api);
  ~UsbHost();
  UsbHost(const UsbHost&) = delete;
  UsbHost& operator=(const UsbHost&) = delete;

  // Called (from any thread) when events become available. Set before Start.
  void SetNotify(std::function<void()> notify);
  // Called (from any thread, without mu_) when the event handler should run a round: a handle is
  // closing, or a blocking call on a closing handle returned. Null: libusb_interrupt_event_handler.
  void SetWake(std::function<void()> wake);
  // Blocking (call from a worker): creates the libusb context, registers hotplug (or, when libusb
  // has no hotplug or `poll` asks for it, lists devices once: later polls are the caller's, with
  // PollDevices, or the event thread's). Returns a libusb error or 0. Events are not handled until
  // the caller polls the context (usb-loop.h) or calls StartThread.
  int Start(bool poll);
  // Starts the event thread, which handles events and polls for devices from then on.
  void StartThread();
  // One round on the caller's loop: handles the events that are ready (zero timeout), then reaps
  // closed handles. True when it queued events, which the caller takes with TakeEvents.
  bool HandleEventsNow();
  // Blocking (call from a worker): one mark-and-sweep of the device list, for a libusb without
  // hotplug. Waits for a Stop under way, so it never uses an exited context.
  void PollDevices();
  bool polls() const { return started_ && !hotplug_; }
  libusb_context* context() const { return ctx_; }
  const LibusbApi* api() const { return api_; }
  // Stops discovery and the thread, cancels every transfer, closes every handle, exits libusb.
  // Idempotent; called by the destructor.
  void Stop();
  bool hotplug() const { return hotplug_; }
  const char* ErrorName(int code) const;

  // Blocking: call from a worker thread. Each returns 0 or a (negative) libusb error.
  int Open(uint32_t device, uint32_t* handle);
  int GetConfiguration(uint32_t handle, int* config);
  // Detaches kernel drivers from `interfaces` (where one is active), then sets the configuration.
  int SetConfiguration(uint32_t handle, int value, const std::vector<int>& interfaces);
  int ClaimInterface(uint32_t handle, int interface_number);

  // Non-blocking: callable from the JS thread.
  int SubmitControl(uint32_t handle, uint32_t request, uint8_t request_type, uint8_t b_request,
                    uint16_t w_value, uint16_t w_index, uint16_t w_length, const uint8_t* out,
                    size_t out_length, unsigned int timeout_ms);
  // Keeps `count` bulk IN transfers of `size` bytes in flight, over `buffers` (≥ count) buffers
  // laid end to end in `region`, which must stay valid until the handle's kUsbClosed event (or,
  // after Stop, for good when leaked() says transfers never called back). A completed transfer's
  // buffer goes to the receiver (kUsbInData) and another buffer takes its place in flight; the
  // receiver gives it back with ReturnIn. `*adopted` says whether the handle took `region` (also on
  // some failures, when transfers were already submitted into it).
  int StartIn(uint32_t handle, uint8_t in_endpoint, uint8_t out_endpoint, uint32_t max_packet,
              uint32_t count, uint32_t size, uint8_t* region, uint32_t buffers, bool* adopted);
  // `data` must stay valid until the kUsbOutDone event for `request` has been taken. Request 0 is
  // untracked: the bytes are copied (the caller may reuse `data` at once) and no kUsbOutDone
  // follows; for small packets nobody waits on (ACKs), whose completion event would cost more
  // than the copy.
  int SubmitOut(uint32_t handle, uint32_t request, uint8_t* data, uint32_t length);
  // Cancels the handle's transfers; kUsbClosed follows once they have all called back.
  int Close(uint32_t handle);

  // Moves the queued events to `out` (the caller frees their data).
  void TakeEvents(std::vector<UsbEvent>* out);
  // The receiver is done with the IN buffers of these kUsbInData events (handle, aux2): they go
  // back in flight as transfers complete. Unknown handles (closed since) are skipped.
  struct InReturn {
    uint32_t handle;
    uint32_t index;
  };
  void ReturnIn(const std::vector<InReturn>& returns);
  // After Stop: true when some transfer never called back, so its handle (and the memory its
  // transfers point at) had to be left alone.
  bool leaked() const { return leaked_; }

 private:
  struct Handle;
  struct Xfer {
    UsbHost* host;
    Handle* handle;
    uint32_t request;
    enum Kind : uint8_t { kIn, kOut, kZlp, kControl } kind;
    uint8_t* owned = nullptr;  // an untracked OUT transfer's copy of its bytes
  };
  struct Handle {
    uint32_t id = 0;
    uint32_t device = 0;
    libusb_device_handle* dev = nullptr;
    int claimed = -1;
    uint8_t in_endpoint = 0;
    uint8_t out_endpoint = 0;
    uint32_t max_packet = 64;
    uint32_t in_size = 0;
    uint32_t in_count = 0;                        // IN transfers to keep in flight
    uint32_t in_active = 0;                       // IN transfers in flight
    std::vector<libusb_transfer*> in_transfers;   // all of them; index = buffer number
    std::vector<libusb_transfer*> spare;          // idle: neither in flight nor with the receiver
    std::unordered_set<libusb_transfer*> others;  // OUT, ZLP and control transfers in flight
    uint32_t in_flight = 0;                       // every submitted transfer not yet called back
    uint32_t busy = 0;                            // blocking calls under way on a worker
    bool in_started = false;
    bool in_ended = false;
    bool closing = false;
  };

  explicit UsbHost(const LibusbApi* api);

  static int HotplugCallback(libusb_context* ctx, libusb_device* device,
                             libusb_hotplug_event event, void* self);
  static void TransferCallback(libusb_transfer* transfer);
  void OnHotplug(libusb_device* device, int event);
  void Arrived(libusb_device* device);
  void OnIn(libusb_transfer* t, Handle* h);
  void OnOther(libusb_transfer* t, Xfer* x);
  void EndIn(Handle* h, int status);
  int SubmitIn(Handle* h, libusb_transfer* t);
  int RefillIn(Handle* h);
  void Push(UsbEvent e);
  void Run();
  void Poll();
  void Reap();
  void Wake();
  // Finds a handle and marks a blocking call on it; null when it is unknown or closing.
  Handle* Borrow(uint32_t id);
  void Return(Handle* h);
  void FreeHandle(Handle* h);

  const LibusbApi* api_;
  libusb_context* ctx_;  // set by Start, under mu_
  std::function<void()> notify_;
  std::mutex start_mu_;
  std::mutex mu_;
  std::vector<UsbEvent> events_;
  std::atomic<bool> notified_{false};
  std::thread::id event_thread_;  // under mu_
  bool in_round_ = false;         // under mu_: HandleEventsNow is under way
  bool notify_pending_ = false;   // under mu_: events pushed this round, JS not yet woken
  std::mutex wake_mu_;            // held while wake_ is called or replaced
  std::function<void()> wake_;
  std::atomic<bool> stop_{false};
  bool started_ = false;
  bool stopped_ = false;
  bool hotplug_ = false;
  bool leaked_ = false;
  libusb_hotplug_callback_handle hotplug_handle_ = 0;
  std::thread thread_;
  uint32_t next_device_ = 1;
  uint32_t next_handle_ = 1;
  uint32_t opening_ = 0;  // Open calls under way on workers
  std::unordered_map<uint32_t, libusb_device*> devices_;
  std::unordered_map<libusb_device*, uint32_t> device_ids_;
  std::unordered_map<uint32_t, Handle*> handles_;
};

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_HOST_H_
