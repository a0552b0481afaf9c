# The muxwire addon (docs/ARCHITECTURE.md "The accel contract"): node-addon-api, C++17, -O2.
# Exceptions stay off (node-addon-api's `node_addon_api` target defines NAPI_DISABLE_CPP_EXCEPTIONS
# and node-gyp's common.gypi passes -fno-exceptions): the hot path has nothing that should unwind,
# JS errors are raised with ThrowAsJavaScriptException and an early return, and allocations that can
# fail use std::nothrow and report a coded error instead of aborting.
# The build is optional: scripts/build-native.mjs attempts it and the TypeScript path serves where
# it fails; src/accel/ is the one place that loads build/Release/muxwire.node.
{
  'targets': [
    {
      'target_name': 'muxwire',
      'sources': [
        'native/addon.cc',
        'native/demuxer.cc',
        'native/demuxer-binding.cc',
        'native/mux-scan.cc',
        # SO_PEERCRED for the daemon's access policy (src/accel/peer-credentials.ts).
        'native/peer-cred.cc',
        # dup() of a client socket for the daemon's ring reader (src/accel/client-reader.ts).
        'native/descriptor.cc',
        # The native USB pipeline: libusb is loaded at run time (usb-loader.cc), so no libusb
        # headers or libraries are needed to build.
        'native/usb-binding.cc',
        'native/usb-host.cc',
        'native/usb-loader.cc',
        'native/usb-loop.cc',
      ],
      'libraries': [ '-ldl', '-lpthread' ],
      'dependencies': [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api",
      ],
      'defines': [
        # Node 20 implements Node-API 9; 8 is enough (instance data, type tags, external buffers).
        'NAPI_VERSION=8',
        'NODE_ADDON_API_DISABLE_DEPRECATED',
      ],
      'cflags!': [ '-O3' ],
      'cflags_cc!': [ '-std=gnu++17', '-O3' ],
      'cflags': [ '-O2', '-Wall', '-Wextra' ],
      'cflags_cc': [ '-std=c++17', '-O2', '-Wall', '-Wextra' ],
      'xcode_settings': {
        'CLANG_CXX_LANGUAGE_STANDARD': 'c++17',
        'GCC_OPTIMIZATION_LEVEL': '2',
        'GCC_ENABLE_CPP_EXCEPTIONS': 'NO',
        'MACOSX_DEPLOYMENT_TARGET': '11.0',
      },
      'msvs_settings': {
        'VCCLCompilerTool': { 'AdditionalOptions': [ '/std:c++17' ], 'Optimization': 2 },
      },
    },
  ],
}
