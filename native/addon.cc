// N-API glue for the muxwire addon: argument checks and conversions only; the work lives in files
// of its own (mux-scan.cc, demuxer.cc) that know nothing of Node. src/accel/ is the one place that loads this
// addon, validates arguments first and holds a TypeScript twin of every entry point; the checks
// here still turn a wrong type into a TypeError rather than a crash (docs/ARCHITECTURE.md,
// conventions §6).
//
// State lives per environment (worker threads each get their own MuxwireAddon through
// napi_set_instance_data, which Napi::Addon uses), never in globals.
#include <napi.h>

#include <cstdint>

#include "demuxer-binding.h"
#include "descriptor.h"
#include "mux-scan.h"
#include "napi-args.h"
#include "peer-cred.h"
#include "usb-binding.h"

namespace muxwire {
namespace {

// Bumped whenever an export changes shape; src/accel/native-binding.ts refuses an addon built from
// other sources (a stale build/) instead of calling into it with the wrong contract.
constexpr uint32_t kAbiVersion = 3;

class MuxwireAddon : public Napi::Addon<MuxwireAddon> {
 public:
  MuxwireAddon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports,
                {
                    InstanceValue("abiVersion", Napi::Number::New(env, kAbiVersion),
                                  napi_enumerable),
                    InstanceMethod("scanMuxPackets", &MuxwireAddon::ScanMuxPacketsJs,
                                   napi_enumerable),
                    InstanceValue("Demuxer", DefineDemuxerClass(env), napi_enumerable),
                    // The native USB pipeline (usb-binding.cc); src/accel/usb-host.ts checks its
                    // own ABI version, so adding it leaves kAbiVersion alone.
                    InstanceValue("UsbHost", DefineUsbHostClass(env), napi_enumerable),
                    // Added after ABI 3 without a bump: src/accel/peer-credentials.ts checks for
                    // it, and an addon without it only leaves restrictive access policies off.
                    InstanceMethod("peerCredentials", &MuxwireAddon::PeerCredentialsJs,
                                   napi_enumerable),
                    // Added after ABI 3 without a bump, as peerCredentials: src/accel/
                    // client-reader.ts checks for it and reads clients as before without it.
                    InstanceMethod("dupDescriptor", &MuxwireAddon::DupDescriptorJs,
                                   napi_enumerable),
                });
  }

 private:
  // peerCredentials(fd: number): {pid, uid, gid} | number — the errno when the kernel refuses
  // (peer-cred.h); pid is -1 where the platform does not report it.
  Napi::Value PeerCredentialsJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd;
    if (!GetOnlyFd(info, "peerCredentials takes (fd: number)", &fd)) return env.Undefined();
    PeerCred cred{};
    const int err = ReadPeerCred(fd, &cred);
    if (err != 0) return Napi::Number::New(env, err);
    Napi::Object out = Napi::Object::New(env);
    out.Set("pid", Napi::Number::New(env, static_cast<double>(cred.pid)));
    out.Set("uid", Napi::Number::New(env, static_cast<double>(cred.uid)));
    out.Set("gid", Napi::Number::New(env, static_cast<double>(cred.gid)));
    return out;
  }

  // dupDescriptor(fd: number): number — the new descriptor (close-on-exec), or -errno.
  Napi::Value DupDescriptorJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd;
    if (!GetOnlyFd(info, "dupDescriptor takes (fd: number)", &fd)) return env.Undefined();
    return Napi::Number::New(env, DupCloexec(fd));
  }

  // The one argument of an fd-taking entry point: a TypeError for a wrong count or type, a
  // RangeError for a number that is not a descriptor; false after throwing.
  static bool GetOnlyFd(const Napi::CallbackInfo& info, const char* usage, int* out) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
      return false;
    }
    const double fd = info[0].As<Napi::Number>().DoubleValue();
    if (!(fd >= 0 && fd <= 0x7fffffff) || fd != static_cast<double>(static_cast<int>(fd))) {
      Napi::RangeError::New(env, "fd must be an integer in 0..2^31-1").ThrowAsJavaScriptException();
      return false;
    }
    *out = static_cast<int>(fd);
    return true;
  }

  // scanMuxPackets(buf: Uint8Array, version: 1 | 2, out: Uint32Array): number (mux-scan.h).
  Napi::Value ScanMuxPacketsJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() != 3) {
      Napi::TypeError::New(env, "scanMuxPackets takes (buf, version, out)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const uint8_t* data;
    size_t size;
    int version;
    uint32_t* out;
    size_t out_len;
    if (!GetBytes(info, 0, "buf must be a Buffer or Uint8Array", &data, &size) ||
        !GetMuxVersion(info, 1, &version) ||
        !GetU32Array(info, 2, "out must be a Uint32Array", &out, &out_len)) {
      return env.Undefined();
    }
    if (out_len < kScanRecordFields) {
      Napi::RangeError::New(env, "out must hold at least one record (5 entries)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const int64_t result = ScanMuxPackets(data, size, version, out, out_len);
    return Napi::Number::New(env, static_cast<double>(result));
  }
};

}  // namespace
}  // namespace muxwire

// The macro pastes the class name into an identifier, so it needs the unqualified name.
using muxwire::MuxwireAddon;
NODE_API_ADDON(MuxwireAddon)
