// The native USB pipeline (usb-host.h).
#include "usb-host.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

namespace muxwire {
namespace {

// The event thread wakes at least this often to reap closed handles and notice Stop, even when a
// libusb lacks libusb_interrupt_event_handler.
constexpr long kEventTimeoutUs = 100 * 1000;
// Stop: how long to wait for cancelled transfers and blocking calls to finish.
constexpr int kStopWaitMs = 5000;
// A byte a zero-length transfer points at (some libusb versions dislike a null buffer).
unsigned char g_zlp_byte = 0;

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

std::shared_ptr<UsbHost> UsbHost::Create(const LibusbApi* api) {
  return std::shared_ptr<UsbHost>(new (std::nothrow) UsbHost(api));
}

UsbHost::UsbHost(const LibusbApi* api) : api_(api), ctx_(nullptr) {}

UsbHost::~UsbHost() {
  Stop();
}

const char* UsbHost::ErrorName(int code) const {
  return api_->error_name(code);
}

void UsbHost::SetNotify(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(mu_);
  notify_ = std::move(notify);
}

void UsbHost::SetWake(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(wake_mu_);
  wake_ = std::move(wake);
}

int UsbHost::Start(bool poll) {
  // Held for the whole start, so a Stop waits for a Start under way instead of racing it.
  std::lock_guard<std::mutex> starting(start_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ || stopped_) return LIBUSB_ERROR_BUSY;
    started_ = true;
  }
  // libusb_init may take a while (the vusb library enumerates its bus before returning, and a
  // simulated device may answer on the JS thread), hence Start runs on a worker.
  libusb_context* ctx = nullptr;
  const int init = api_->init(&ctx);
  if (init != 0) return init;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ctx_ = ctx;
  }
  // As usbmuxd: hotplug ARRIVED|LEFT for VID 0x05AC, any PID, with ENUMERATE so devices already
  // present arrive too; without hotplug support, poll every DEVICE_POLL_TIME (usbmux.md §1.7).
  if (!poll && api_->has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
    const int r = api_->hotplug_register_callback(
        ctx_, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
        LIBUSB_HOTPLUG_ENUMERATE, kAppleVendorId, LIBUSB_HOTPLUG_MATCH_ANY,
        LIBUSB_HOTPLUG_MATCH_ANY, &UsbHost::HotplugCallback, this, &hotplug_handle_);
    hotplug_ = r == 0;
  }
  if (!hotplug_) Poll();
  return 0;
}

void UsbHost::StartThread() {
  std::lock_guard<std::mutex> starting(start_mu_);
  if (stopped_ || ctx_ == nullptr || thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

bool UsbHost::HandleEventsNow() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ || ctx_ == nullptr) return false;
    in_round_ = true;
  }
  timeval tv{0, 0};
  api_->handle_events_timeout_completed(ctx_, &tv, nullptr);
  Reap();
  std::lock_guard<std::mutex> lock(mu_);
  in_round_ = false;
  const bool pending = notify_pending_;
  notify_pending_ = false;
  return pending;
}

void UsbHost::PollDevices() {
  std::lock_guard<std::mutex> starting(start_mu_);
  if (stopped_ || ctx_ == nullptr || hotplug_) return;
  Poll();
}

void UsbHost::Stop() {
  std::lock_guard<std::mutex> starting(start_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    notify_ = nullptr;
    // Never started: nothing to tear down (a later Start sees stopped_ and refuses).
    if (ctx_ == nullptr) return;
  }
  if (hotplug_) api_->hotplug_deregister_callback(ctx_, hotplug_handle_);
  stop_ = true;
  // The event thread, where there is one, leaves its round (a loop driving the host has been
  // detached by now, usb-loop.h).
  if (thread_.joinable()) {
    Wake();
    thread_.join();
  }

  // Cancel everything, then handle events here until every transfer has called back and no
  // blocking call is under way (usbmuxd's reap_dead_devices does the same with 1 ms steps).
  const uint64_t deadline = NowMs() + kStopWaitMs;
  for (;;) {
    bool pending = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, h] : handles_) {
        if (!h->closing) {
          h->closing = true;
          for (libusb_transfer* t : h->in_transfers) api_->cancel_transfer(t);
          for (libusb_transfer* t : h->others) api_->cancel_transfer(t);
        }
        if (h->in_flight > 0 || h->busy > 0) pending = true;
      }
      if (opening_ > 0) pending = true;
    }
    if (!pending || NowMs() > deadline) break;
    timeval tv{0, 10 * 1000};
    api_->handle_events_timeout_completed(ctx_, &tv, nullptr);
  }
  std::vector<Handle*> handles;
  bool leaked = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, h] : handles_) {
      // A transfer that never called back keeps its handle (and the context): freeing them would
      // let a late callback touch freed memory. Leaking them at exit is the lesser harm.
      if (h->in_flight == 0 && h->busy == 0) {
        handles.push_back(h);
      } else {
        leaked = true;
      }
    }
    handles_.clear();
    for (UsbEvent& e : events_) std::free(e.data);
    events_.clear();
    leaked_ = leaked;
  }
  for (Handle* h : handles) FreeHandle(h);
  for (auto& [id, dev] : devices_) api_->unref_device(dev);
  devices_.clear();
  device_ids_.clear();
  if (!leaked) api_->exit(ctx_);
  ctx_ = nullptr;
}

void UsbHost::Wake() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (wake_) {
      wake_();
      return;
    }
  }
  if (api_->interrupt_event_handler != nullptr && ctx_ != nullptr) {
    api_->interrupt_event_handler(ctx_);
  }
}

void UsbHost::Run() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    event_thread_ = std::this_thread::get_id();
  }
  uint64_t next_poll = NowMs() + kPollIntervalMs;
  while (!stop_) {
    timeval tv{0, kEventTimeoutUs};
    api_->handle_events_timeout_completed(ctx_, &tv, nullptr);
    if (stop_) break;
    if (!hotplug_ && NowMs() >= next_poll) {
      Poll();
      next_poll = NowMs() + kPollIntervalMs;
    }
    Reap();
    // One wake-up of the JS thread for everything this round produced.
    std::lock_guard<std::mutex> lock(mu_);
    if (notify_pending_) {
      notify_pending_ = false;
      if (!notified_.exchange(true) && notify_) notify_();
    }
  }
}

// ---- discovery ----

int UsbHost::HotplugCallback(libusb_context*, libusb_device* device, libusb_hotplug_event event,
                             void* self) {
  static_cast<UsbHost*>(self)->OnHotplug(device, event);
  return 0;  // stay registered
}

void UsbHost::OnHotplug(libusb_device* device, int event) {
  if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED) {
    Arrived(device);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto found = device_ids_.find(device);
  if (found == device_ids_.end()) return;
  UsbEvent e;
  e.kind = kUsbLeft;
  e.device = found->second;
  devices_.erase(found->second);
  device_ids_.erase(found);
  api_->unref_device(device);
  Push(e);
}

void UsbHost::Arrived(libusb_device* device) {
  libusb_device_descriptor desc;
  if (api_->get_device_descriptor(device, &desc) != 0) return;
  if (desc.idVendor != kAppleVendorId) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_ || device_ids_.count(device) != 0) return;
  const uint32_t id = next_device_++;
  api_->ref_device(device);
  devices_[id] = device;
  device_ids_[device] = id;
  UsbEvent e;
  e.kind = kUsbArrived;
  e.device = id;
  e.aux1 = (static_cast<uint32_t>(desc.idVendor) << 16) | desc.idProduct;
  const uint32_t speed = static_cast<uint32_t>(api_->get_device_speed(device)) & 0xFF;
  e.aux2 = (static_cast<uint32_t>(api_->get_bus_number(device)) << 16) |
           (static_cast<uint32_t>(api_->get_device_address(device)) << 8) | speed;
  Push(e);
}

// Mark and sweep, as usbmuxd's polling: devices still listed stay, the others have left.
void UsbHost::Poll() {
  libusb_device** list = nullptr;
  const long n = api_->get_device_list(ctx_, &list);
  if (n < 0) return;  // usbmuxd tolerates a few failed enumerations; the next poll tries again
  std::unordered_set<libusb_device*> present;
  for (long i = 0; i < n; i++) {
    present.insert(list[i]);
    Arrived(list[i]);
  }
  std::vector<libusb_device*> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [dev, id] : device_ids_) {
      if (present.count(dev) == 0) gone.push_back(dev);
    }
  }
  for (libusb_device* dev : gone) OnHotplug(dev, LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT);
  api_->free_device_list(list, 1);
}

// ---- blocking calls ----

UsbHost::Handle* UsbHost::Borrow(uint32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = handles_.find(id);
  if (found == handles_.end() || found->second->closing) return nullptr;
  found->second->busy++;
  return found->second;
}

void UsbHost::Return(Handle* h) {
  bool closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    h->busy--;
    closing = h->closing;
  }
  // A handle closed during the call is reaped by the next round: make sure one comes.
  if (closing) Wake();
}

int UsbHost::Open(uint32_t device, uint32_t* handle) {
  libusb_device* dev;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return LIBUSB_ERROR_NO_DEVICE;
    auto found = devices_.find(device);
    if (found == devices_.end()) return LIBUSB_ERROR_NO_DEVICE;
    dev = api_->ref_device(found->second);
    opening_++;  // Stop waits for this open to finish before it exits libusb
  }
  libusb_device_handle* dh = nullptr;
  const int r = api_->open(dev, &dh);
  api_->unref_device(dev);
  Handle* h = r == 0 ? new (std::nothrow) Handle() : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  opening_--;
  if (r != 0) return r;
  if (h == nullptr || stopped_) {
    api_->close(dh);
    delete h;
    return h == nullptr ? LIBUSB_ERROR_NO_MEM : LIBUSB_ERROR_NO_DEVICE;
  }
  h->dev = dh;
  h->device = device;
  h->id = next_handle_++;
  handles_[h->id] = h;
  *handle = h->id;
  return 0;
}

int UsbHost::GetConfiguration(uint32_t handle, int* config) {
  Handle* h = Borrow(handle);
  if (h == nullptr) return LIBUSB_ERROR_NOT_FOUND;
  const int r = api_->get_configuration(h->dev, config);
  Return(h);
  return r;
}

int UsbHost::SetConfiguration(uint32_t handle, int value, const std::vector<int>& interfaces) {
  Handle* h = Borrow(handle);
  if (h == nullptr) return LIBUSB_ERROR_NOT_FOUND;
  // As usbmuxd: a kernel driver bound to an interface of the configuration would refuse the
  // change, so detach it first (Linux; elsewhere these calls are absent or NOT_SUPPORTED).
  if (api_->kernel_driver_active != nullptr && api_->detach_kernel_driver != nullptr) {
    for (int number : interfaces) {
      if (api_->kernel_driver_active(h->dev, number) == 1) {
        api_->detach_kernel_driver(h->dev, number);
      }
    }
  }
  const int r = api_->set_configuration(h->dev, value);
  Return(h);
  return r;
}

int UsbHost::ClaimInterface(uint32_t handle, int interface_number) {
  Handle* h = Borrow(handle);
  if (h == nullptr) return LIBUSB_ERROR_NOT_FOUND;
  if (api_->kernel_driver_active != nullptr && api_->detach_kernel_driver != nullptr &&
      api_->kernel_driver_active(h->dev, interface_number) == 1) {
    api_->detach_kernel_driver(h->dev, interface_number);
  }
  const int r = api_->claim_interface(h->dev, interface_number);
  if (r == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    h->claimed = interface_number;
  }
  Return(h);
  return r;
}

// ---- transfers ----

void UsbHost::TransferCallback(libusb_transfer* t) {
  Xfer* x = static_cast<Xfer*>(t->user_data);
  if (x->kind == Xfer::kIn) {
    x->host->OnIn(t, x->handle);
  } else {
    x->host->OnOther(t, x);
  }
}

int UsbHost::SubmitControl(uint32_t handle, uint32_t request, uint8_t request_type,
                           uint8_t b_request, uint16_t w_value, uint16_t w_index,
                           uint16_t w_length, const uint8_t* out, size_t out_length,
                           unsigned int timeout_ms) {
  const bool is_in = (request_type & 0x80) != 0;
  if (!is_in && out_length != w_length) return LIBUSB_ERROR_INVALID_PARAM;
  std::lock_guard<std::mutex> lock(mu_);
  auto found = handles_.find(handle);
  if (found == handles_.end() || found->second->closing) return LIBUSB_ERROR_NOT_FOUND;
  Handle* h = found->second;
  auto* buffer = static_cast<unsigned char*>(std::malloc(LIBUSB_CONTROL_SETUP_SIZE + w_length));
  libusb_transfer* t = api_->alloc_transfer(0);
  Xfer* x = new (std::nothrow) Xfer{this, h, request, Xfer::kControl};
  if (buffer == nullptr || t == nullptr || x == nullptr) {
    std::free(buffer);
    if (t != nullptr) api_->free_transfer(t);
    delete x;
    return LIBUSB_ERROR_NO_MEM;
  }
  // The setup packet, little-endian (libusb_fill_control_setup).
  buffer[0] = request_type;
  buffer[1] = b_request;
  buffer[2] = w_value & 0xFF;
  buffer[3] = w_value >> 8;
  buffer[4] = w_index & 0xFF;
  buffer[5] = w_index >> 8;
  buffer[6] = w_length & 0xFF;
  buffer[7] = w_length >> 8;
  if (!is_in && w_length > 0) std::memcpy(buffer + LIBUSB_CONTROL_SETUP_SIZE, out, w_length);
  t->dev_handle = h->dev;
  t->flags = 0;
  t->endpoint = 0;
  t->type = LIBUSB_TRANSFER_TYPE_CONTROL;
  t->timeout = timeout_ms;
  t->length = static_cast<int>(LIBUSB_CONTROL_SETUP_SIZE + w_length);
  t->callback = &UsbHost::TransferCallback;
  t->user_data = x;
  t->buffer = buffer;
  t->num_iso_packets = 0;
  const int r = api_->submit_transfer(t);
  if (r != 0) {
    std::free(buffer);
    api_->free_transfer(t);
    delete x;
    return r;
  }
  h->others.insert(t);
  h->in_flight++;
  return 0;
}

int UsbHost::StartIn(uint32_t handle, uint8_t in_endpoint, uint8_t out_endpoint,
                     uint32_t max_packet, uint32_t count, uint32_t size, uint8_t* region,
                     uint32_t buffers, bool* adopted) {
  *adopted = false;
  if (count < 1 || count > kMaxInTransfers || size < 1 || size > kMaxInTransferSize ||
      buffers < count || buffers > kInBuffersPerTransfer * kMaxInTransfers || region == nullptr ||
      max_packet < 1 || (in_endpoint & 0x80) == 0 || (out_endpoint & 0x80) != 0) {
    return LIBUSB_ERROR_INVALID_PARAM;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto found = handles_.find(handle);
  if (found == handles_.end() || found->second->closing) return LIBUSB_ERROR_NOT_FOUND;
  Handle* h = found->second;
  if (h->in_started) return LIBUSB_ERROR_BUSY;
  h->in_started = true;
  *adopted = true;
  h->in_endpoint = in_endpoint;
  h->out_endpoint = out_endpoint;
  h->max_packet = max_packet;
  h->in_size = size;
  h->in_count = count;
  for (uint32_t i = 0; i < buffers; i++) {
    libusb_transfer* t = api_->alloc_transfer(0);
    // `request` holds the buffer's index (kUsbInData aux2, ReturnIn).
    Xfer* x = new (std::nothrow) Xfer{this, h, i, Xfer::kIn};
    if (t == nullptr || x == nullptr) {
      if (t != nullptr) api_->free_transfer(t);
      delete x;
      EndIn(h, LIBUSB_TRANSFER_ERROR);
      return LIBUSB_ERROR_NO_MEM;
    }
    // Bulk IN with no timeout, as usbmuxd's RX loops, reading straight into the receiver's memory.
    t->dev_handle = h->dev;
    t->flags = 0;
    t->endpoint = in_endpoint;
    t->type = LIBUSB_TRANSFER_TYPE_BULK;
    t->timeout = 0;
    t->length = static_cast<int>(size);
    t->callback = &UsbHost::TransferCallback;
    t->user_data = x;
    t->buffer = region + static_cast<size_t>(i) * size;
    t->num_iso_packets = 0;
    h->in_transfers.push_back(t);
  }
  // Submitted in index order (the spare list is taken from its back).
  for (uint32_t i = buffers; i-- > 0;) h->spare.push_back(h->in_transfers[i]);
  return RefillIn(h);
}

// With mu_ held.
int UsbHost::SubmitIn(Handle* h, libusb_transfer* t) {
  t->actual_length = 0;
  const int r = api_->submit_transfer(t);
  if (r == 0) {
    h->in_flight++;
    h->in_active++;
  }
  return r;
}

// With mu_ held. Puts spare buffers in flight until `in_count` are; a failed submission ends the
// pipe and is returned.
int UsbHost::RefillIn(Handle* h) {
  while (!h->closing && !h->in_ended && h->in_active < h->in_count && !h->spare.empty()) {
    libusb_transfer* t = h->spare.back();
    const int r = SubmitIn(h, t);
    if (r != 0) {
      EndIn(h, r == LIBUSB_ERROR_NO_DEVICE ? LIBUSB_TRANSFER_NO_DEVICE : LIBUSB_TRANSFER_ERROR);
      return r;
    }
    h->spare.pop_back();
  }
  return 0;
}

void UsbHost::OnIn(libusb_transfer* t, Handle* h) {
  std::lock_guard<std::mutex> lock(mu_);
  h->in_flight--;
  h->in_active--;
  if (t->status != LIBUSB_TRANSFER_COMPLETED) {
    // NO_DEVICE on unplug, CANCELLED on close, ERROR/STALL/OVERFLOW on a broken pipe: the pipe is
    // over either way (usbmuxd marks the device dead on a failed RX callback, usbmux.md §1.7).
    h->spare.push_back(t);
    if (!h->closing) EndIn(h, t->status);
    return;
  }
  const uint32_t actual = static_cast<uint32_t>(t->actual_length);
  if (h->closing || h->in_ended || actual == 0) {
    // A zero-length completion carries nothing (usbmuxd's device_data_input ignores length 0).
    h->spare.push_back(t);
  } else {
    // The buffer goes to the receiver as it is (no copy); another takes its place in flight.
    const uint32_t index = static_cast<Xfer*>(t->user_data)->request;
    UsbEvent e;
    e.kind = kUsbInData;
    e.device = h->device;
    e.handle = h->id;
    e.length = actual;
    e.aux1 = index * h->in_size;
    e.aux2 = index;
    Push(e);
  }
  RefillIn(h);
}

// With mu_ held. Reports the end of the IN pipe once.
void UsbHost::EndIn(Handle* h, int status) {
  if (h->in_ended) return;
  h->in_ended = true;
  UsbEvent e;
  e.kind = kUsbInEnd;
  e.device = h->device;
  e.handle = h->id;
  e.status = status;
  Push(e);
}

void UsbHost::ReturnIn(const std::vector<InReturn>& returns) {
  std::lock_guard<std::mutex> lock(mu_);
  Handle* h = nullptr;
  for (const InReturn& r : returns) {
    if (h == nullptr || h->id != r.handle) {
      if (h != nullptr) RefillIn(h);
      auto found = handles_.find(r.handle);
      h = found == handles_.end() ? nullptr : found->second;
      if (h == nullptr) continue;
    }
    if (r.index < h->in_transfers.size()) h->spare.push_back(h->in_transfers[r.index]);
  }
  if (h != nullptr) RefillIn(h);
}

int UsbHost::SubmitOut(uint32_t handle, uint32_t request, uint8_t* data, uint32_t length) {
  if (length > kMaxOutTransfer) return LIBUSB_ERROR_INVALID_PARAM;
  std::lock_guard<std::mutex> lock(mu_);
  auto found = handles_.find(handle);
  if (found == handles_.end() || found->second->closing) return LIBUSB_ERROR_NOT_FOUND;
  Handle* h = found->second;
  if (!h->in_started) return LIBUSB_ERROR_INVALID_PARAM;  // endpoints not known yet
  // usbmuxd's ZLP rule (usbmux.md §1.4): a packet that is a whole number of wMaxPacketSize
  // packets is followed by a zero-length transfer, which ends the device's read there.
  const bool zlp = length > 0 && length % h->max_packet == 0;
  libusb_transfer* t = api_->alloc_transfer(0);
  Xfer* x = new (std::nothrow) Xfer{this, h, request, Xfer::kOut};
  libusb_transfer* z = zlp ? api_->alloc_transfer(0) : nullptr;
  Xfer* zx = zlp ? new (std::nothrow) Xfer{this, h, request, Xfer::kZlp} : nullptr;
  if (t == nullptr || x == nullptr || (zlp && (z == nullptr || zx == nullptr))) {
    if (t != nullptr) api_->free_transfer(t);
    if (z != nullptr) api_->free_transfer(z);
    delete x;
    delete zx;
    return LIBUSB_ERROR_NO_MEM;
  }
  t->dev_handle = h->dev;
  t->flags = 0;
  t->endpoint = h->out_endpoint;
  t->type = LIBUSB_TRANSFER_TYPE_BULK;
  t->timeout = 0;
  t->length = static_cast<int>(length);
  t->callback = &UsbHost::TransferCallback;
  t->user_data = x;
  if (request == 0 && length > 0) {
    x->owned = static_cast<uint8_t*>(std::malloc(length));
    if (x->owned == nullptr) {
      api_->free_transfer(t);
      if (z != nullptr) api_->free_transfer(z);
      delete x;
      delete zx;
      return LIBUSB_ERROR_NO_MEM;
    }
    std::memcpy(x->owned, data, length);
    data = x->owned;
  }
  t->buffer = length > 0 ? data : &g_zlp_byte;
  t->num_iso_packets = 0;
  int r = api_->submit_transfer(t);
  if (r != 0) {
    api_->free_transfer(t);
    std::free(x->owned);
    delete x;
    if (z != nullptr) api_->free_transfer(z);
    delete zx;
    return r;
  }
  h->others.insert(t);
  h->in_flight++;
  if (zlp) {
    // Field by field, never `*z = *t`: t is submitted already, and libusb may be writing its
    // status and actual_length in another thread's event handling right now.
    z->dev_handle = t->dev_handle;
    z->flags = t->flags;
    z->endpoint = t->endpoint;
    z->type = t->type;
    z->timeout = t->timeout;
    z->callback = t->callback;
    z->num_iso_packets = 0;
    z->length = 0;
    z->buffer = &g_zlp_byte;
    z->user_data = zx;
    r = api_->submit_transfer(z);
    if (r != 0) {
      // The packet itself is on its way; without its ZLP the device may wait for more, and the
      // next packet ends its read instead. usbmuxd logs this and carries on the same way.
      api_->free_transfer(z);
      delete zx;
    } else {
      h->others.insert(z);
      h->in_flight++;
    }
  }
  return 0;
}

void UsbHost::OnOther(libusb_transfer* t, Xfer* x) {
  std::lock_guard<std::mutex> lock(mu_);
  Handle* h = x->handle;
  h->in_flight--;
  h->others.erase(t);
  std::free(x->owned);
  if ((x->kind == Xfer::kOut && x->request != 0) || x->kind == Xfer::kControl) {
    UsbEvent e;
    e.kind = x->kind == Xfer::kOut ? kUsbOutDone : kUsbControlDone;
    e.device = h->device;
    e.handle = h->id;
    e.request = x->request;
    e.status = t->status;
    e.length = static_cast<uint32_t>(t->actual_length);
    if (x->kind == Xfer::kControl) {
      if (e.length > 0 && t->status == LIBUSB_TRANSFER_COMPLETED) {
        e.data = static_cast<uint8_t*>(std::malloc(e.length));
        if (e.data != nullptr) {
          std::memcpy(e.data, t->buffer + LIBUSB_CONTROL_SETUP_SIZE, e.length);
        } else {
          e.status = LIBUSB_TRANSFER_ERROR;
          e.length = 0;
        }
      } else {
        e.length = 0;
      }
      std::free(t->buffer);
    }
    Push(e);
  }
  delete x;
  api_->free_transfer(t);
}

int UsbHost::Close(uint32_t handle) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = handles_.find(handle);
    if (found == handles_.end()) return LIBUSB_ERROR_NOT_FOUND;
    Handle* h = found->second;
    if (h->closing) return 0;
    h->closing = true;
    for (libusb_transfer* t : h->in_transfers) api_->cancel_transfer(t);
    for (libusb_transfer* t : h->others) api_->cancel_transfer(t);
  }
  Wake();
  return 0;
}

// After each round of event handling: handles whose transfers have all called
// back are released and closed (as usbmuxd's reap_dead_devices).
void UsbHost::Reap() {
  std::vector<Handle*> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = handles_.begin(); it != handles_.end();) {
      Handle* h = it->second;
      if (h->closing && h->in_flight == 0 && h->busy == 0) {
        done.push_back(h);
        it = handles_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Handle* h : done) {
    const uint32_t id = h->id;
    const uint32_t device = h->device;
    FreeHandle(h);
    std::lock_guard<std::mutex> lock(mu_);
    UsbEvent e;
    e.kind = kUsbClosed;
    e.device = device;
    e.handle = id;
    Push(e);
  }
}

// Without mu_; the handle is out of the map and nothing refers to it.
void UsbHost::FreeHandle(Handle* h) {
  if (h->claimed >= 0) api_->release_interface(h->dev, h->claimed);
  api_->close(h->dev);
  for (libusb_transfer* t : h->in_transfers) {
    // The buffers are the receiver's region (StartIn), not ours to free.
    delete static_cast<Xfer*>(t->user_data);
    api_->free_transfer(t);
  }
  delete h;
}

// ---- events ----

// With mu_ held.
// Events of a round are delivered once, at its end: by HandleEventsNow's caller on the JS thread
// with no wake-up at all, or, on the event thread, with one wake-up of the JS thread (Run), so one
// batch carries the round's completions instead of the first of them: each wake-up is a write to
// libuv's eventfd and a context switch, which per event cost as much as the event's work.
void UsbHost::Push(UsbEvent e) {
  events_.push_back(e);
  if (in_round_ || std::this_thread::get_id() == event_thread_) {
    notify_pending_ = true;
  } else if (!notified_.exchange(true) && notify_) {
    notify_();
  }
}

void UsbHost::TakeEvents(std::vector<UsbEvent>* out) {
  notified_ = false;
  std::lock_guard<std::mutex> lock(mu_);
  out->swap(events_);
}

}  // namespace muxwire
