// N-API glue for the demuxer core (demuxer.h): the JS class `Demuxer` of the addon's exports.
#ifndef MUXWIRE_NATIVE_DEMUXER_BINDING_H_
#define MUXWIRE_NATIVE_DEMUXER_BINDING_H_

#include <napi.h>

namespace muxwire {

// The constructor function to export, defined once per environment.
Napi::Function DefineDemuxerClass(Napi::Env env);

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_DEMUXER_BINDING_H_
