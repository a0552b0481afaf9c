// N-API glue for the demuxer core: argument checks, and pinning of the JavaScript memory the core
// works in. Every buffer the core writes to is held by a reference here for as long as the core
// may touch it (the staging buffers and ring positions for the object's life, each ring until its
// connection closes), as node-usb pins a buffer while a transfer holds it.
//
//   new Demuxer(version, maxPacket, stagingA, stagingB, ringState)
//   .setVersion(version)   .open(slot, sport, dport, ring)   .close(slot)
//   .push(transfer, events) -> count | -1          .staged() -> bytes being reassembled
//   .attachSink(slot, fd) -> bool   .setDirect(slot, on)   .detachSink(slot)
//
// The TypeScript twin is src/accel/demux-core.ts; src/accel/demuxer.ts validates before calling.
#include "demuxer-binding.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <new>
#include <vector>

#include "demuxer.h"
#include "mux-wire.h"
#include "napi-args.h"

namespace muxwire {
namespace {

constexpr uint32_t kMaxConnections = 65536;
// A ring's capacity is a power of two so that positions can run modulo 2^32 and still map onto
// the ring with a mask.
constexpr uint32_t kMaxRing = 1u << 30;

class DemuxerWrap : public Napi::ObjectWrap<DemuxerWrap> {
 public:
  explicit DemuxerWrap(const Napi::CallbackInfo& info);

  Napi::Value SetVersion(const Napi::CallbackInfo& info);
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Push(const Napi::CallbackInfo& info);
  Napi::Value Staged(const Napi::CallbackInfo& info);
  Napi::Value AttachSink(const Napi::CallbackInfo& info);
  Napi::Value SetDirect(const Napi::CallbackInfo& info);
  Napi::Value DetachSink(const Napi::CallbackInfo& info);

 private:
  // Throws unless the constructor completed (a failed constructor leaves no core).
  bool Ready(const Napi::CallbackInfo& info);
  bool GetSlot(const Napi::CallbackInfo& info, uint32_t* slot);

  std::unique_ptr<Demuxer> core_;
  Napi::ObjectReference staging_a_;
  Napi::ObjectReference staging_b_;
  Napi::ObjectReference ring_state_;
  std::vector<Napi::ObjectReference> rings_;
};

DemuxerWrap::DemuxerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DemuxerWrap>(info) {
  if (!CheckArgCount(info, 5, "Demuxer takes (version, maxPacket, stagingA, stagingB, ringState)")) {
    return;
  }
  int version;
  uint32_t max_packet;
  const uint8_t* a;
  const uint8_t* b;
  size_t a_size;
  size_t b_size;
  uint32_t* state;
  size_t state_len;
  if (!GetMuxVersion(info, 0, &version) ||
      !GetInteger(info, 1, "maxPacket", kMuxHeaderSizeV2, kMaxMuxPacket, &max_packet) ||
      !GetBytes(info, 2, "stagingA must be a Uint8Array", &a, &a_size) ||
      !GetBytes(info, 3, "stagingB must be a Uint8Array", &b, &b_size) ||
      !GetU32Array(info, 4, "ringState must be a Uint32Array", &state, &state_len)) {
    return;
  }
  if (a_size < max_packet || b_size < max_packet) {
    Napi::RangeError::New(info.Env(), "staging buffers must hold maxPacket bytes")
        .ThrowAsJavaScriptException();
    return;
  }
  if (state_len < 2 || state_len % 2 != 0 || state_len / 2 > kMaxConnections) {
    Napi::RangeError::New(info.Env(), "ringState must hold 2 entries per connection (1..65536)")
        .ThrowAsJavaScriptException();
    return;
  }
  if (a == b) {
    Napi::RangeError::New(info.Env(), "the staging buffers must be distinct")
        .ThrowAsJavaScriptException();
    return;
  }
  staging_a_ = Napi::Persistent(info[2].As<Napi::Object>());
  staging_b_ = Napi::Persistent(info[3].As<Napi::Object>());
  ring_state_ = Napi::Persistent(info[4].As<Napi::Object>());
  rings_.resize(state_len / 2);
  core_.reset(new (std::nothrow) Demuxer(version, max_packet, const_cast<uint8_t*>(a),
                                         const_cast<uint8_t*>(b), state, state_len / 2));
  if (!core_) Napi::Error::New(info.Env(), "out of memory").ThrowAsJavaScriptException();
}

bool DemuxerWrap::Ready(const Napi::CallbackInfo& info) {
  if (core_) return true;
  Napi::Error::New(info.Env(), "Demuxer was not constructed").ThrowAsJavaScriptException();
  return false;
}

bool DemuxerWrap::GetSlot(const Napi::CallbackInfo& info, uint32_t* slot) {
  return GetInteger(info, 0, "slot", 0, static_cast<double>(core_->max_connections() - 1), slot);
}

Napi::Value DemuxerWrap::SetVersion(const Napi::CallbackInfo& info) {
  int version;
  if (Ready(info) && CheckArgCount(info, 1, "setVersion takes (version)") &&
      GetMuxVersion(info, 0, &version)) {
    core_->SetVersion(version);
  }
  return info.Env().Undefined();
}

Napi::Value DemuxerWrap::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t slot;
  uint32_t sport;
  uint32_t dport;
  const uint8_t* ring;
  size_t capacity;
  if (!Ready(info) || !CheckArgCount(info, 4, "open takes (slot, sport, dport, ring)") ||
      !GetSlot(info, &slot) || !GetInteger(info, 1, "sport", 0, 65535, &sport) ||
      !GetInteger(info, 2, "dport", 0, 65535, &dport) ||
      !GetBytes(info, 3, "ring must be a Uint8Array", &ring, &capacity)) {
    return env.Undefined();
  }
  if (capacity == 0 || capacity > kMaxRing || (capacity & (capacity - 1)) != 0) {
    Napi::RangeError::New(env, "ring capacity must be a power of two up to 1 GiB")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (core_->IsOpen(slot)) {
    Napi::Error::New(env, "slot is already open").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (core_->HasPorts(static_cast<uint16_t>(sport), static_cast<uint16_t>(dport))) {
    Napi::Error::New(env, "a connection with these ports is already open")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  rings_[slot] = Napi::Persistent(info[3].As<Napi::Object>());
  core_->Open(slot, static_cast<uint16_t>(sport), static_cast<uint16_t>(dport),
              const_cast<uint8_t*>(ring), static_cast<uint32_t>(capacity));
  return env.Undefined();
}

Napi::Value DemuxerWrap::Close(const Napi::CallbackInfo& info) {
  uint32_t slot;
  if (Ready(info) && CheckArgCount(info, 1, "close takes (slot)") && GetSlot(info, &slot) &&
      core_->IsOpen(slot)) {
    core_->Close(slot);
    rings_[slot].Reset();
  }
  return info.Env().Undefined();
}

Napi::Value DemuxerWrap::Push(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* data;
  size_t size;
  uint32_t* events;
  size_t events_len;
  if (!Ready(info) || !CheckArgCount(info, 2, "push takes (transfer, events)") ||
      !GetBytes(info, 0, "transfer must be a Buffer or Uint8Array", &data, &size) ||
      !GetU32Array(info, 1, "events must be a Uint32Array", &events, &events_len)) {
    return env.Undefined();
  }
  if (events_len < core_->MaxEvents(size) * kEventFields) {
    Napi::RangeError::New(env, "events cannot hold the records this transfer may produce")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(core_->Push(data, size, events)));
}

Napi::Value DemuxerWrap::Staged(const Napi::CallbackInfo& info) {
  if (!Ready(info)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), core_->staged());
}

// Duplicates `fd` when it is a stream socket the demuxer may send to; -1 otherwise.
int DuplicateSocket(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return -1;
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return -1;
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

Napi::Value DemuxerWrap::AttachSink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t slot;
  uint32_t fd;
  if (!Ready(info) || !CheckArgCount(info, 2, "attachSink takes (slot, fd)") ||
      !GetSlot(info, &slot) || !GetInteger(info, 1, "fd", 0, 0x7fffffff, &fd)) {
    return env.Undefined();
  }
  if (!core_->IsOpen(slot)) {
    Napi::Error::New(env, "slot is not open").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int dup = DuplicateSocket(static_cast<int>(fd));
  if (dup < 0) return Napi::Boolean::New(env, false);
  core_->AttachSink(slot, dup);
  return Napi::Boolean::New(env, true);
}

Napi::Value DemuxerWrap::SetDirect(const Napi::CallbackInfo& info) {
  uint32_t slot;
  if (Ready(info) && CheckArgCount(info, 2, "setDirect takes (slot, on)") && GetSlot(info, &slot) &&
      core_->IsOpen(slot)) {
    core_->SetDirect(slot, info[1].ToBoolean().Value());
  }
  return info.Env().Undefined();
}

Napi::Value DemuxerWrap::DetachSink(const Napi::CallbackInfo& info) {
  uint32_t slot;
  if (Ready(info) && CheckArgCount(info, 1, "detachSink takes (slot)") && GetSlot(info, &slot) &&
      core_->IsOpen(slot)) {
    core_->DetachSink(slot);
  }
  return info.Env().Undefined();
}

}  // namespace

Napi::Function DefineDemuxerClass(Napi::Env env) {
  return DemuxerWrap::DefineClass(env, "Demuxer",
                                  {
                                      DemuxerWrap::InstanceMethod("setVersion",
                                                                  &DemuxerWrap::SetVersion),
                                      DemuxerWrap::InstanceMethod("open", &DemuxerWrap::Open),
                                      DemuxerWrap::InstanceMethod("close", &DemuxerWrap::Close),
                                      DemuxerWrap::InstanceMethod("push", &DemuxerWrap::Push),
                                      DemuxerWrap::InstanceMethod("staged", &DemuxerWrap::Staged),
                                      DemuxerWrap::InstanceMethod("attachSink",
                                                                  &DemuxerWrap::AttachSink),
                                      DemuxerWrap::InstanceMethod("setDirect",
                                                                  &DemuxerWrap::SetDirect),
                                      DemuxerWrap::InstanceMethod("detachSink",
                                                                  &DemuxerWrap::DetachSink),
                                  });
}

}  // namespace muxwire
