// Argument checks shared by the N-API glue: each turns a wrong argument into a pending TypeError
// or RangeError and returns false, so a caller that skipped src/accel/'s validation gets an
// exception, never a crash (docs/ARCHITECTURE.md, conventions §6).
#ifndef MUXWIRE_NATIVE_NAPI_ARGS_H_
#define MUXWIRE_NATIVE_NAPI_ARGS_H_

#include <napi.h>

#include <cstdint>
#include <limits>
#include <string>

namespace muxwire {

// One napi_get_typedarray_info call per argument, not the three or four that Napi::TypedArray's
// helpers make: the scan itself takes a few nanoseconds per packet, so the fixed cost of a call is
// what decides when the addon is worth calling (bench/demux-scan.ts).
inline bool GetTypedArray(const Napi::CallbackInfo& info, size_t index, napi_typedarray_type want,
                   const char* message, void** data, size_t* length) {
  napi_typedarray_type type;
  if (napi_get_typedarray_info(info.Env(), info[index], &type, length, data, nullptr, nullptr) !=
          napi_ok ||
      type != want) {
    Napi::TypeError::New(info.Env(), message).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// A view of a Uint8Array (Buffer included) argument, or an exception pending on `env`.
inline bool GetBytes(const Napi::CallbackInfo& info, size_t index, const char* message,
              const uint8_t** data, size_t* size) {
  void* raw;
  if (!GetTypedArray(info, index, napi_uint8_array, message, &raw, size)) return false;
  // Offsets travel back to JS as u32; Node's Buffer cannot exceed 4 GiB, but say so rather than
  // wrap around if it ever can.
  if (*size > std::numeric_limits<uint32_t>::max()) {
    Napi::RangeError::New(info.Env(), "buffer is larger than 4 GiB").ThrowAsJavaScriptException();
    return false;
  }
  *data = static_cast<const uint8_t*>(raw);
  return true;
}

inline bool GetU32Array(const Napi::CallbackInfo& info, size_t index, const char* message,
                 uint32_t** data, size_t* length) {
  void* raw;
  if (!GetTypedArray(info, index, napi_uint32_array, message, &raw, length)) return false;
  *data = static_cast<uint32_t*>(raw);
  return true;
}

// The mux protocol version: exactly 1 or 2.
inline bool GetMuxVersion(const Napi::CallbackInfo& info, size_t index, int* version) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) {
    Napi::TypeError::New(info.Env(), "version must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  const double v = value.As<Napi::Number>().DoubleValue();
  if (v != 1 && v != 2) {
    Napi::RangeError::New(info.Env(), "version must be 1 or 2").ThrowAsJavaScriptException();
    return false;
  }
  *version = static_cast<int>(v);
  return true;
}

// An integer argument in [min, max].
inline bool GetInteger(const Napi::CallbackInfo& info, size_t index, const char* name, double min,
                       double max, uint32_t* result) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string(name) + " must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  const double v = value.As<Napi::Number>().DoubleValue();
  if (!(v >= min && v <= max) || v != static_cast<double>(static_cast<int64_t>(v))) {
    Napi::RangeError::New(info.Env(), std::string(name) + " is out of range")
        .ThrowAsJavaScriptException();
    return false;
  }
  *result = static_cast<uint32_t>(v);
  return true;
}

// Exactly `count` arguments.
inline bool CheckArgCount(const Napi::CallbackInfo& info, size_t count, const char* usage) {
  if (info.Length() != count) {
    Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_NAPI_ARGS_H_
