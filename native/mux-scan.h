// Finds complete mux packets in a buffer of concatenated packets, without copying (the first piece
// of the demuxer; src/accel/mux-scan.ts is its TypeScript twin and the two must agree bit for bit).
//
// Results go into a caller-owned u32 array, one record of kScanRecordFields per packet:
//
//   out[5k+0] offset of packet k in the buffer
//   out[5k+1] its length (header included)
//   out[5k+2] protocol
//   out[5k+3] sport   (TCP packets whose 20-byte TCP header is complete, else 0)
//   out[5k+4] dport   (same)
//
// The return value is the number of records written: scanning stops at the first packet that is
// not complete yet and when `out` is full. A declared length below the header size or above
// kMaxMuxPacket returns kScanBadLength with out[0] = the packet's offset, out[1] = its length.
#ifndef MUXWIRE_NATIVE_MUX_SCAN_H_
#define MUXWIRE_NATIVE_MUX_SCAN_H_

#include <cstddef>
#include <cstdint>

namespace muxwire {

constexpr size_t kScanRecordFields = 5;
constexpr int64_t kScanBadLength = -1;

// `version` is 1 or 2 (the caller validates); `out_len` counts u32 entries and must be at least
// kScanRecordFields so an error can be reported.
int64_t ScanMuxPackets(const uint8_t* data, size_t size, int version, uint32_t* out,
                       size_t out_len);

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_MUX_SCAN_H_
