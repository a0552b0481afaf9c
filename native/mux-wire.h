// Byte-level facts of the device mux protocol, shared by the scanner and (issue 6) the demuxer.
// Every field is big-endian (usbmux.md §2.1, §3.1).
//
//   mux header v1 (8 bytes)            mux header v2 (16 bytes)
//   0  u32 protocol                    0  u32 protocol
//   4  u32 length (header included)    4  u32 length (header included)
//                                      8  u32 magic   (0xFEEDFACE host→device; never checked)
//                                      12 u16 tx_seq
//                                      14 u16 rx_seq
//
//   TCP-like header (20 bytes, right after the mux header when protocol == 6)
//   0  u16 sport   2  u16 dport   4  u32 seq   8  u32 ack
//   12 u8 data offset<<4   13 u8 flags   14 u16 window>>8   16 u16 checksum   18 u16 urgent
#ifndef MUXWIRE_NATIVE_MUX_WIRE_H_
#define MUXWIRE_NATIVE_MUX_WIRE_H_

#include <cstddef>
#include <cstdint>

namespace muxwire {

constexpr uint32_t kMuxProtocolTcp = 6;
constexpr size_t kMuxHeaderSizeV1 = 8;
constexpr size_t kMuxHeaderSizeV2 = 16;
// The length field sits in the first 8 bytes of both header versions, so a length can be checked
// before the rest of a v2 header has arrived.
constexpr size_t kMuxLengthFieldEnd = 8;
constexpr size_t kTcpHeaderSize = 20;
// The TCP-like header's RST flag (offset 13). An RST's payload is its reason text, never stream data
// (usbmux.md §3.7: usbmuxd logs it and tears down).
constexpr uint8_t kTcpFlagRst = 0x04;
// FIN (0x01): the end of the device's data; the mux has no half-close (usbmux.md §3.7).
constexpr uint8_t kTcpFlagFin = 0x01;
// usbmuxd's DEV_MRU: the largest device→host packet it reassembles (usbmux.md §2.5).
constexpr uint32_t kMaxMuxPacket = 65536;

inline size_t MuxHeaderSize(int version) {
  return version == 1 ? kMuxHeaderSizeV1 : kMuxHeaderSizeV2;
}

inline uint32_t ReadU32BE(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

inline uint16_t ReadU16BE(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_MUX_WIRE_H_
