// N-API glue for the native USB pipeline: argument checks, promises for the calls that may block
// on the device (run as AsyncWorkers on libuv's pool, never on the JS thread: a simulated device
// in the same process answers on the JS thread, and real devices take milliseconds), and the
// batched delivery of events. libusb's events are handled on the JS thread's loop (usb-loop.h),
// and a round's events are delivered straight after it; events produced on other threads (a
// worker's discovery, the event thread where libusb cannot be polled from outside) come through
// one thread-safe function that is unref'd, so an idle host does not keep the process alive (as
// node-usb does).
//
//   new UsbHost(libusbPath, onEvents)      onEvents(records: Uint32Array, buffers: Array)
//   .start(poll, eventThread) -> Promise<1 | 0> (hotplug)              .stop()
//   .info() -> {path, hotplug, events: 'loop' | 'thread' | ''}
//   .open(device) -> Promise<handle>       .getConfiguration(handle) -> Promise<number>
//   .setConfiguration(handle, value, interfaces) -> Promise   .claimInterface(handle, n) -> Promise
//   .control(handle, request, bmRequestType, bRequest, wValue, wIndex, wLength, data|null,
//            timeoutMs) -> 0 | libusb error
//   .startIn(handle, inEndpoint, outEndpoint, maxPacket, count, size) -> region | libusb error
//   .send(handle, request, data) -> 0 | libusb error   (the caller keeps `data` alive until done;
//                                  request 0: copied, and no OUT_DONE follows)
//   .closeHandle(handle) -> 0 | libusb error          .errorName(code) -> string
//   .ref() / .unref()   keep Node running while JS awaits an event (unref'd by default)
//
// Records are kUsbEventFields u32 per event (usb-host.h); buffers[i] is a control transfer's data
// or undefined. IN data lies in the handle's region, the Buffer startIn returned: the IN transfers
// read straight into it (kInBuffersPerTransfer × count buffers of `size` bytes), each IN_DATA
// record names its offset, and the buffers of a batch go back in flight once onEvents returns.
#include "usb-binding.h"

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "napi-args.h"
#include "usb-host.h"
#include "usb-loader.h"
#include "usb-loop.h"

namespace muxwire {
namespace {

// Bumped whenever UsbHost's JS shape changes; src/accel/usb-host.ts checks it.
constexpr uint32_t kUsbAbiVersion = 6;

struct Holder {
  std::shared_ptr<UsbHost> host;
  // onEvents, and the async context it is called in from the loop's rounds (MakeCallback, so
  // process.nextTick and promise jobs run after it, as after any libuv callback).
  Napi::FunctionReference callback;
  std::unique_ptr<Napi::AsyncContext> context;
  // Set once start() has attached the host to the loop; null with an event thread.
  std::shared_ptr<UsbLoop> loop;
  std::vector<UsbEvent> scratch;
  std::vector<UsbHost::InReturn> returns;
  // Each handle's IN region: a JS-owned Buffer the IN transfers read into, pinned here from
  // startIn until the handle's CLOSED event (every transfer has called back), so libusb never
  // writes into memory V8 has let go. JS sees views of it; no new memory per batch or transfer
  // (an external Buffer per transfer costs V8 a finalizer in every collection). Used on the JS
  // thread only.
  std::unordered_map<uint32_t, Napi::Reference<Napi::Buffer<uint8_t>>> regions;
};

// After UsbHost::Stop: the regions go, unless a transfer never called back and may still point
// into one (UsbHost::leaked); then they are left pinned for good, as the handle itself is.
void DropRegions(Holder* holder) {
  if (holder->host->leaked()) {
    for (auto& [handle, region] : holder->regions) region.SuppressDestruct();
  }
  holder->regions.clear();
}

void FreeData(Napi::Env, uint8_t* data) {
  std::free(data);
}

// On the JS thread: one batch of events, called from a callback scope (the thread-safe function's)
// or, with `scoped`, opening one.
void Deliver(Napi::Env env, Holder* holder, bool scoped) {
  std::vector<UsbEvent>& events = holder->scratch;
  std::vector<UsbHost::InReturn>& returns = holder->returns;
  events.clear();
  returns.clear();
  holder->host->TakeEvents(&events);
  if (events.empty()) return;
  Napi::HandleScope scope(env);
  const size_t n = events.size();
  Napi::Uint32Array records = Napi::Uint32Array::New(env, n * kUsbEventFields);
  Napi::Array buffers = Napi::Array::New(env, n);
  std::vector<uint32_t> closed;
  for (size_t i = 0; i < n; i++) {
    UsbEvent& e = events[i];
    uint32_t* r = records.Data() + i * kUsbEventFields;
    r[0] = e.kind;
    r[1] = e.device;
    r[2] = e.handle;
    r[3] = e.request;
    r[4] = static_cast<uint32_t>(e.status);
    r[5] = e.length;
    r[6] = e.aux1;
    r[7] = e.aux2;
    if (e.data != nullptr) {
      // Control data: the event's memory becomes the Buffer's (freed by its finalizer); where
      // external buffers are not allowed, NewOrCopy copies and frees at once.
      buffers.Set(i, Napi::Buffer<uint8_t>::NewOrCopy(env, e.data, e.length, FreeData));
      e.data = nullptr;
    }
    if (e.kind == kUsbInData) returns.push_back({e.handle, e.aux2});
    if (e.kind == kUsbClosed) closed.push_back(e.handle);
  }
  events.clear();
  if (scoped) {
    holder->callback.MakeCallback(env.Global(), {records, buffers}, *holder->context);
    // As a thread-safe function's call: what onEvents throws is an uncaught exception.
    if (env.IsExceptionPending()) {
      napi_fatal_exception(env, env.GetAndClearPendingException().Value());
    }
  } else {
    holder->callback.Call({records, buffers});
  }
  // JS is done with the batch's IN buffers when onEvents returns (consumers that keep bytes copy
  // them): they go back in flight.
  if (!returns.empty()) holder->host->ReturnIn(returns);
  // Every transfer of these handles has called back: their regions may go (views JS still holds
  // keep the memory alive).
  for (uint32_t handle : closed) holder->regions.erase(handle);
}

// Events produced off the JS thread.
void CallJs(Napi::Env env, Napi::Function, Holder* holder, void*) {
  if (env == nullptr || holder == nullptr) return;
  Deliver(env, holder, false);
}

void FinalizeHolder(Napi::Env, void*, Holder* holder) {
  // Environment teardown (or release after stop): no event may be delivered after this, and the
  // event handler is done with the pool blocks before they are let go.
  if (holder->loop) holder->loop->Detach();
  holder->host->Stop();
  DropRegions(holder);
  delete holder;
}

using Tsfn = Napi::TypedThreadSafeFunction<Holder, void, CallJs>;

// A call that may block on the device, run off the JS thread; settles a promise with the number
// it produced, or rejects with an Error carrying `libusbError`.
class BlockingCall : public Napi::AsyncWorker {
 public:
  using Fn = std::function<int(UsbHost*, int*)>;
  // `then` runs on the JS thread with `fn`'s status once it has returned, before the promise
  // settles.
  BlockingCall(Napi::Env env, std::shared_ptr<UsbHost> host, Fn fn,
               std::function<void(Napi::Env, int)> then = nullptr)
      : Napi::AsyncWorker(env, "muxwire.usb"),
        host_(std::move(host)),
        fn_(std::move(fn)),
        then_(std::move(then)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { status_ = fn_(host_.get(), &result_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (then_) then_(env, status_);
    if (status_ < 0) {
      Napi::Error err = Napi::Error::New(env, host_->ErrorName(status_));
      err.Set("libusbError", Napi::Number::New(env, status_));
      deferred_.Reject(err.Value());
    } else {
      deferred_.Resolve(Napi::Number::New(env, result_));
    }
  }

 private:
  std::shared_ptr<UsbHost> host_;
  Fn fn_;
  std::function<void(Napi::Env, int)> then_;
  Napi::Promise::Deferred deferred_;
  int status_ = 0;
  int result_ = 0;
};

class UsbHostWrap : public Napi::ObjectWrap<UsbHostWrap> {
 public:
  explicit UsbHostWrap(const Napi::CallbackInfo& info);
  ~UsbHostWrap() override;

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value GetConfiguration(const Napi::CallbackInfo& info);
  Napi::Value SetConfiguration(const Napi::CallbackInfo& info);
  Napi::Value ClaimInterface(const Napi::CallbackInfo& info);
  Napi::Value Control(const Napi::CallbackInfo& info);
  Napi::Value StartIn(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value CloseHandle(const Napi::CallbackInfo& info);
  Napi::Value ErrorName(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);

 private:
  bool Live(const Napi::CallbackInfo& info);
  Napi::Value Queue(const Napi::CallbackInfo& info, BlockingCall::Fn fn,
                    std::function<void(Napi::Env, int)> then = nullptr);
  void Attach(Napi::Env env, bool event_thread);

  std::shared_ptr<UsbHost> host_;
  std::shared_ptr<UsbLoop> loop_;  // also in the holder (FinalizeHolder); null before start
  const char* events_ = "";
  Tsfn tsfn_;
  Holder* holder_ = nullptr;  // owned by tsfn_ (FinalizeHolder); used while !stopped_
  bool released_ = true;
  bool stopped_ = false;
  std::string path_;
};

UsbHostWrap::UsbHostWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UsbHostWrap>(info) {
  Napi::Env env = info.Env();
  if (!CheckArgCount(info, 2, "UsbHost takes (libusbPath, onEvents)")) return;
  if (!info[0].IsString() || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "UsbHost takes (libusbPath: string, onEvents: function)")
        .ThrowAsJavaScriptException();
    return;
  }
  LoadedLibusb lib = LoadLibusb(info[0].As<Napi::String>().Utf8Value());
  if (lib.api == nullptr) {
    Napi::Error err = Napi::Error::New(env, "libusb did not load: " + lib.error);
    err.Set("reason", Napi::String::New(env, "load"));
    err.ThrowAsJavaScriptException();
    return;
  }
  path_ = lib.path;
  host_ = UsbHost::Create(lib.api);
  if (!host_) {
    Napi::Error::New(env, "out of memory").ThrowAsJavaScriptException();
    return;
  }
  auto* holder = new Holder{host_, Napi::Persistent(info[1].As<Napi::Function>()),
                            std::make_unique<Napi::AsyncContext>(env, "muxwire.usb.events"),
                            nullptr, {}, {}, {}};
  holder_ = holder;
  void (*finalize)(Napi::Env, void*, Holder*) = &FinalizeHolder;
  tsfn_ = Tsfn::New(env, info[1].As<Napi::Function>(), "muxwire.usb.events", 0, 1, holder,
                    finalize, static_cast<void*>(nullptr));
  released_ = false;
  // Unref'd: USB activity alone does not keep Node running; the daemon's sockets do.
  tsfn_.Unref(env);
  Tsfn tsfn = tsfn_;
  host_->SetNotify([tsfn]() mutable { tsfn.NonBlockingCall(); });
}

UsbHostWrap::~UsbHostWrap() {
  // Garbage-collected without stop(): stop event handling; the unref'd function is finalized with
  // the environment.
  if (loop_) loop_->Detach();
  if (host_) host_->Stop();
}

bool UsbHostWrap::Live(const Napi::CallbackInfo& info) {
  if (!host_ || stopped_) {
    Napi::Error::New(info.Env(), "the USB host is stopped").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

Napi::Value UsbHostWrap::Start(const Napi::CallbackInfo& info) {
  if (!Live(info)) return info.Env().Undefined();
  if (info.Length() != 2 || !info[0].IsBoolean() || !info[1].IsBoolean()) {
    Napi::TypeError::New(info.Env(), "start takes (poll: boolean, eventThread: boolean)")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const bool poll = info[0].As<Napi::Boolean>().Value();
  const bool event_thread = info[1].As<Napi::Boolean>().Value();
  // Held until the start has settled: Attach needs this object.
  Napi::ObjectWrap<UsbHostWrap>::Ref();
  return Queue(
      info,
      [poll](UsbHost* host, int* out) {
        const int r = host->Start(poll);
        *out = host->hotplug() ? 1 : 0;
        return r;
      },
      [this, event_thread](Napi::Env env, int status) {
        if (status == 0) Attach(env, event_thread);
        Napi::ObjectWrap<UsbHostWrap>::Unref();
      });
}

// On the JS thread, once libusb_init has returned (on a worker): events are handled on this
// thread's loop from now on, or, where libusb cannot be polled from outside or `event_thread`
// asks for it, on a thread of the host's own.
void UsbHostWrap::Attach(Napi::Env env, bool event_thread) {
  if (stopped_) return;
  if (!event_thread) {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) == napi_ok) {
      Holder* holder = holder_;
      loop_ = UsbLoop::Attach(loop, host_, [env, holder] {
        Napi::HandleScope scope(env);
        Deliver(env, holder, true);
      });
    }
  }
  if (loop_) {
    holder_->loop = loop_;
    events_ = "loop";
  } else {
    host_->StartThread();
    events_ = "thread";
  }
}

Napi::Value UsbHostWrap::Stop(const Napi::CallbackInfo& info) {
  if (host_ && !stopped_) {
    stopped_ = true;
    if (loop_) loop_->Detach();
    host_->Stop();
    DropRegions(holder_);
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
  }
  return info.Env().Undefined();
}

Napi::Value UsbHostWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", Napi::String::New(env, path_));
  o.Set("hotplug", Napi::Boolean::New(env, host_ && host_->hotplug()));
  o.Set("events", Napi::String::New(env, events_));
  return o;
}

Napi::Value UsbHostWrap::Queue(const Napi::CallbackInfo& info, BlockingCall::Fn fn,
                               std::function<void(Napi::Env, int)> then) {
  auto* call = new BlockingCall(info.Env(), host_, std::move(fn), std::move(then));
  Napi::Promise promise = call->Promise();
  call->Queue();
  return promise;
}

Napi::Value UsbHostWrap::Open(const Napi::CallbackInfo& info) {
  uint32_t device;
  if (!Live(info) || !CheckArgCount(info, 1, "open takes (device)") ||
      !GetInteger(info, 0, "device", 1, 0xFFFFFFFF, &device)) {
    return info.Env().Undefined();
  }
  return Queue(info, [device](UsbHost* host, int* out) {
    uint32_t handle = 0;
    const int r = host->Open(device, &handle);
    *out = static_cast<int>(handle);
    return r;
  });
}

Napi::Value UsbHostWrap::GetConfiguration(const Napi::CallbackInfo& info) {
  uint32_t handle;
  if (!Live(info) || !CheckArgCount(info, 1, "getConfiguration takes (handle)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle)) {
    return info.Env().Undefined();
  }
  return Queue(info, [handle](UsbHost* host, int* out) { return host->GetConfiguration(handle, out); });
}

Napi::Value UsbHostWrap::SetConfiguration(const Napi::CallbackInfo& info) {
  uint32_t handle;
  uint32_t value;
  if (!Live(info) || !CheckArgCount(info, 3, "setConfiguration takes (handle, value, interfaces)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle) ||
      !GetInteger(info, 1, "value", 0, 255, &value)) {
    return info.Env().Undefined();
  }
  if (!info[2].IsArray()) {
    Napi::TypeError::New(info.Env(), "interfaces must be an array").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Array list = info[2].As<Napi::Array>();
  std::vector<int> interfaces;
  for (uint32_t i = 0; i < list.Length() && i < 32; i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsNumber()) {
      Napi::TypeError::New(info.Env(), "interfaces must hold numbers").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    interfaces.push_back(v.As<Napi::Number>().Int32Value() & 0xFF);
  }
  return Queue(info, [handle, value, interfaces](UsbHost* host, int* out) {
    *out = 0;
    return host->SetConfiguration(handle, static_cast<int>(value), interfaces);
  });
}

Napi::Value UsbHostWrap::ClaimInterface(const Napi::CallbackInfo& info) {
  uint32_t handle;
  uint32_t number;
  if (!Live(info) || !CheckArgCount(info, 2, "claimInterface takes (handle, interface)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle) ||
      !GetInteger(info, 1, "interface", 0, 255, &number)) {
    return info.Env().Undefined();
  }
  return Queue(info, [handle, number](UsbHost* host, int* out) {
    *out = 0;
    return host->ClaimInterface(handle, static_cast<int>(number));
  });
}

Napi::Value UsbHostWrap::Control(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t handle, request, request_type, b_request, w_value, w_index, w_length, timeout;
  if (!Live(info) ||
      !CheckArgCount(info, 9,
                     "control takes (handle, request, bmRequestType, bRequest, wValue, wIndex, "
                     "wLength, data, timeoutMs)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle) ||
      !GetInteger(info, 1, "request", 0, 0xFFFFFFFF, &request) ||
      !GetInteger(info, 2, "bmRequestType", 0, 255, &request_type) ||
      !GetInteger(info, 3, "bRequest", 0, 255, &b_request) ||
      !GetInteger(info, 4, "wValue", 0, 0xFFFF, &w_value) ||
      !GetInteger(info, 5, "wIndex", 0, 0xFFFF, &w_index) ||
      !GetInteger(info, 6, "wLength", 0, 0xFFFF, &w_length) ||
      !GetInteger(info, 8, "timeoutMs", 0, 0x7FFFFFFF, &timeout)) {
    return env.Undefined();
  }
  const uint8_t* data = nullptr;
  size_t size = 0;
  if (!info[7].IsNull() && !info[7].IsUndefined() &&
      !GetBytes(info, 7, "data must be a Uint8Array or null", &data, &size)) {
    return env.Undefined();
  }
  const int r = host_->SubmitControl(handle, request, static_cast<uint8_t>(request_type),
                                     static_cast<uint8_t>(b_request), static_cast<uint16_t>(w_value),
                                     static_cast<uint16_t>(w_index), static_cast<uint16_t>(w_length),
                                     data, size, timeout);
  // Its timeout is a new deadline the loop's timer may have to meet.
  if (r == 0 && loop_) loop_->Rearm();
  return Napi::Number::New(env, r);
}

Napi::Value UsbHostWrap::StartIn(const Napi::CallbackInfo& info) {
  uint32_t handle, in_ep, out_ep, max_packet, count, size;
  if (!Live(info) ||
      !CheckArgCount(info, 6, "startIn takes (handle, inEndpoint, outEndpoint, maxPacket, count, size)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle) ||
      !GetInteger(info, 1, "inEndpoint", 0x80, 0x8F, &in_ep) ||
      !GetInteger(info, 2, "outEndpoint", 0, 0x0F, &out_ep) ||
      !GetInteger(info, 3, "maxPacket", 1, 0xFFFF, &max_packet) ||
      !GetInteger(info, 4, "count", 1, kMaxInTransfers, &count) ||
      !GetInteger(info, 5, "size", 1, kMaxInTransferSize, &size)) {
    return info.Env().Undefined();
  }
  Napi::Env env = info.Env();
  const uint32_t buffers = count * kInBuffersPerTransfer;
  Napi::Buffer<uint8_t> region = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(buffers) * size);
  if (env.IsExceptionPending()) return env.Undefined();
  bool adopted = false;
  const int r = host_->StartIn(handle, static_cast<uint8_t>(in_ep), static_cast<uint8_t>(out_ep),
                               max_packet, count, size, region.Data(), buffers, &adopted);
  // Pinned whenever the handle took it, even on a failure after some transfers were submitted.
  if (adopted) holder_->regions[handle] = Napi::Persistent(region);
  if (r != 0) return Napi::Number::New(env, r);
  return region;
}

Napi::Value UsbHostWrap::Send(const Napi::CallbackInfo& info) {
  uint32_t handle, request;
  const uint8_t* data;
  size_t size;
  if (!Live(info) || !CheckArgCount(info, 3, "send takes (handle, request, data)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle) ||
      !GetInteger(info, 1, "request", 0, 0xFFFFFFFF, &request) ||
      !GetBytes(info, 2, "data must be a Uint8Array", &data, &size)) {
    return info.Env().Undefined();
  }
  if (size > kMaxOutTransfer) {
    Napi::RangeError::New(info.Env(), "an OUT transfer holds at most 49152 bytes")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  // libusb writes nothing into an OUT buffer; the cast only fits its one buffer field.
  const int r = host_->SubmitOut(handle, request, const_cast<uint8_t*>(data),
                                 static_cast<uint32_t>(size));
  return Napi::Number::New(info.Env(), r);
}

Napi::Value UsbHostWrap::CloseHandle(const Napi::CallbackInfo& info) {
  uint32_t handle;
  if (!Live(info) || !CheckArgCount(info, 1, "closeHandle takes (handle)") ||
      !GetInteger(info, 0, "handle", 1, 0x7FFFFFFF, &handle)) {
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), host_->Close(handle));
}

// While JavaScript awaits an event (a control transfer, a handle closing), the event function is
// ref'd so Node does not exit under the await; otherwise it stays unref'd.
Napi::Value UsbHostWrap::Ref(const Napi::CallbackInfo& info) {
  if (!released_) tsfn_.Ref(info.Env());
  return info.Env().Undefined();
}

Napi::Value UsbHostWrap::Unref(const Napi::CallbackInfo& info) {
  if (!released_) tsfn_.Unref(info.Env());
  return info.Env().Undefined();
}

Napi::Value UsbHostWrap::ErrorName(const Napi::CallbackInfo& info) {
  if (!host_ || info.Length() != 1 || !info[0].IsNumber()) {
    return Napi::String::New(info.Env(), "LIBUSB_ERROR_OTHER");
  }
  return Napi::String::New(info.Env(), host_->ErrorName(info[0].As<Napi::Number>().Int32Value()));
}

}  // namespace

Napi::Function DefineUsbHostClass(Napi::Env env) {
  return UsbHostWrap::DefineClass(
      env, "UsbHost",
      {
          UsbHostWrap::StaticValue("abiVersion", Napi::Number::New(env, kUsbAbiVersion)),
          UsbHostWrap::StaticValue("eventFields", Napi::Number::New(env, kUsbEventFields)),
          UsbHostWrap::InstanceMethod("start", &UsbHostWrap::Start),
          UsbHostWrap::InstanceMethod("stop", &UsbHostWrap::Stop),
          UsbHostWrap::InstanceMethod("info", &UsbHostWrap::Info),
          UsbHostWrap::InstanceMethod("open", &UsbHostWrap::Open),
          UsbHostWrap::InstanceMethod("getConfiguration", &UsbHostWrap::GetConfiguration),
          UsbHostWrap::InstanceMethod("setConfiguration", &UsbHostWrap::SetConfiguration),
          UsbHostWrap::InstanceMethod("claimInterface", &UsbHostWrap::ClaimInterface),
          UsbHostWrap::InstanceMethod("control", &UsbHostWrap::Control),
          UsbHostWrap::InstanceMethod("startIn", &UsbHostWrap::StartIn),
          UsbHostWrap::InstanceMethod("send", &UsbHostWrap::Send),
          UsbHostWrap::InstanceMethod("closeHandle", &UsbHostWrap::CloseHandle),
          UsbHostWrap::InstanceMethod("errorName", &UsbHostWrap::ErrorName),
          UsbHostWrap::InstanceMethod("ref", &UsbHostWrap::Ref),
          UsbHostWrap::InstanceMethod("unref", &UsbHostWrap::Unref),
      });
}

}  // namespace muxwire
