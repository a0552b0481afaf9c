// See mux-scan.h for the contract and mux-wire.h for the byte layout.
#include "mux-scan.h"

#include "mux-wire.h"

namespace muxwire {

int64_t ScanMuxPackets(const uint8_t* data, size_t size, int version, uint32_t* out,
                       size_t out_len) {
  const size_t header_size = MuxHeaderSize(version);
  const size_t capacity = out_len / kScanRecordFields;
  size_t offset = 0;
  size_t count = 0;
  while (count < capacity) {
    const size_t left = size - offset;
    // Limits before anything else: the length is judged as soon as its field is visible, even
    // when the packet itself has not fully arrived (netmuxd treats such a length as fatal too).
    if (left < kMuxLengthFieldEnd) break;
    const uint8_t* packet = data + offset;
    const uint32_t length = ReadU32BE(packet + 4);
    if (length < header_size || length > kMaxMuxPacket) {
      out[0] = static_cast<uint32_t>(offset);
      out[1] = length;
      return kScanBadLength;
    }
    if (left < length) break;
    const uint32_t protocol = ReadU32BE(packet);
    uint32_t sport = 0;
    uint32_t dport = 0;
    // usbmuxd drops TCP packets shorter than header + 20 bytes (usbmux.md §2.7), so
    // ports are reported only for packets whose TCP-like header is complete.
    if (protocol == kMuxProtocolTcp && length >= header_size + kTcpHeaderSize) {
      sport = ReadU16BE(packet + header_size);
      dport = ReadU16BE(packet + header_size + 2);
    }
    uint32_t* record = out + count * kScanRecordFields;
    record[0] = static_cast<uint32_t>(offset);
    record[1] = length;
    record[2] = protocol;
    record[3] = sport;
    record[4] = dport;
    offset += length;
    ++count;
  }
  return static_cast<int64_t>(count);
}

}  // namespace muxwire
