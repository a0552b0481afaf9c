// See demuxer.h for the contract; mux-wire.h for the byte layout.
#include "demuxer.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mux-wire.h"

namespace muxwire {

namespace {

inline uint32_t PortsKey(uint16_t sport, uint16_t dport) {
  return (static_cast<uint32_t>(sport) << 16) | dport;
}

}  // namespace

Demuxer::Demuxer(int version, uint32_t max_packet, uint8_t* staging_a, uint8_t* staging_b,
                 uint32_t* ring_state, size_t max_connections)
    : version_(version),
      max_packet_(max_packet),
      staging_{staging_a, staging_b},
      ring_state_(ring_state),
      rings_(max_connections) {}

void Demuxer::SetVersion(int version) { version_ = version; }

size_t Demuxer::HeaderSize() const { return MuxHeaderSize(version_); }

bool Demuxer::LengthOk(uint32_t length) const {
  return length >= HeaderSize() && length <= max_packet_;
}

bool Demuxer::HasPorts(uint16_t sport, uint16_t dport) const {
  return slots_by_ports_.count(PortsKey(sport, dport)) != 0;
}

void Demuxer::Open(uint32_t slot, uint16_t sport, uint16_t dport, uint8_t* ring,
                   uint32_t capacity) {
  Ring& r = rings_[slot];
  r.data = ring;
  r.capacity = capacity;
  r.key = PortsKey(sport, dport);
  ring_state_[2 * slot] = 0;
  ring_state_[2 * slot + 1] = 0;
  slots_by_ports_[r.key] = slot;
}

void Demuxer::Close(uint32_t slot) {
  Ring& r = rings_[slot];
  if (r.data == nullptr) return;
  // A payload streaming into this ring stops there: the ring may be handed to another connection.
  if (streaming_ && stream_slot_ == slot) orphaned_ = true;
  DetachSink(slot);
  slots_by_ports_.erase(r.key);
  r = Ring();
}

void Demuxer::AttachSink(uint32_t slot, int fd) {
  DetachSink(slot);
  rings_[slot].sink = fd;
  rings_[slot].direct = false;
}

void Demuxer::SetDirect(uint32_t slot, bool direct) {
  Ring& r = rings_[slot];
  r.direct = direct && r.sink >= 0;
}

void Demuxer::DetachSink(uint32_t slot) {
  Ring& r = rings_[slot];
  if (r.sink >= 0) close(r.sink);
  r.sink = -1;
  r.direct = false;
}

uint32_t Demuxer::SendToSink(Ring& ring, const uint8_t* data, uint32_t length) {
#ifdef MSG_NOSIGNAL
  constexpr int kFlags = MSG_DONTWAIT | MSG_NOSIGNAL;
#else
  constexpr int kFlags = MSG_DONTWAIT;  // Node ignores SIGPIPE
#endif
  uint32_t sent = 0;
  while (sent < length) {
    const ssize_t n = send(ring.sink, data + sent, length - sent, kFlags);
    if (n > 0) {
      sent += static_cast<uint32_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // Full (EAGAIN) or failed (the client is gone: JS hears of it from its own socket): the rest
    // goes through the ring and JS.
    break;
  }
  if (sent < length) ring.direct = false;
  return sent;
}

int64_t Demuxer::Fail(uint32_t offset, uint32_t length, uint32_t* events) {
  // A length that cannot be trusted leaves no way to find the next packet: the stream is over
  // (netmuxd: fatal for the device), and every later push says so again.
  failed_ = true;
  streaming_ = false;
  failed_offset_ = offset;
  failed_length_ = length;
  events[0] = offset;
  events[1] = length;
  return kDemuxBadLength;
}

int64_t Demuxer::Push(const uint8_t* data, size_t size, uint32_t* events) {
  if (failed_) {
    events[0] = failed_offset_;
    events[1] = failed_length_;
    return kDemuxBadLength;
  }
  // A zero-length transfer (a ZLP) changes nothing; its data pointer may be null.
  if (size == 0) return 0;
  size_t count = 0;
  size_t pos = 0;

  // 1. Finish the packet that began in an earlier transfer, copying only what it still lacks.
  if (staged_ > 0) {
    uint8_t* stage = staging_[current_];
    if (staged_ < kMuxLengthFieldEnd) {
      const size_t take = std::min(kMuxLengthFieldEnd - staged_, size);
      Append(data, take);
      pos = take;
      if (staged_ < kMuxLengthFieldEnd) return 0;
    }
    // Checked on every push, not only when the length arrived: the version (and so the header
    // size) may have changed since.
    const uint32_t length = ReadU32BE(stage + 4);
    if (!LengthOk(length)) return Fail(kOffsetEarlier, length, events);
    const size_t take = std::min<size_t>(length - staged_, size - pos);
    Append(data + pos, take);
    pos += take;
    if (staged_ < length) return 0;
    Emit(1 + current_, 0, stage, length, events);
    ++count;
    // The finished packet stays readable in this staging buffer until the next push (its headers
    // only, when its payload went straight to a ring); a new partial packet goes to the other one.
    current_ ^= 1;
    staged_ = 0;
  }

  // 2. Whole packets inside the transfer: events point into it, nothing is copied.
  while (size - pos >= kMuxLengthFieldEnd) {
    const uint8_t* packet = data + pos;
    const uint32_t length = ReadU32BE(packet + 4);
    if (!LengthOk(length)) return Fail(static_cast<uint32_t>(pos), length, events);
    if (size - pos < length) break;
    Emit(kSourceTransfer, static_cast<uint32_t>(pos), packet, length,
         events + count * kEventFields);
    ++count;
    pos += length;
  }

  // 3. Keep the start of the next packet. Its length, when visible, passed the check above, so
  // it fits in a staging buffer of max_packet bytes.
  if (pos < size) Append(data + pos, size - pos);
  return static_cast<int64_t>(count);
}

void Demuxer::Append(const uint8_t* data, size_t n) {
  uint8_t* stage = staging_[current_];
  const uint32_t headers = static_cast<uint32_t>(HeaderSize() + kTcpHeaderSize);
  if (!streaming_) {
    // The headers always go to staging; once they are all there, StartStream decides (once per
    // packet: staged_ == headers only until the first payload byte) where the payload goes.
    const size_t head = staged_ < headers ? std::min<size_t>(headers - staged_, n) : 0;
    std::memcpy(stage + staged_, data, head);
    staged_ += static_cast<uint32_t>(head);
    data += head;
    n -= head;
    if (n == 0) return;
    if (staged_ != headers || !StartStream()) {
      std::memcpy(stage + staged_, data, n);
      staged_ += static_cast<uint32_t>(n);
      return;
    }
  }
  if (!orphaned_) {
    const Ring& ring = rings_[stream_slot_];
    const uint32_t at = (stream_write_ + (staged_ - headers)) & (ring.capacity - 1);
    const uint32_t first = std::min<uint32_t>(static_cast<uint32_t>(n), ring.capacity - at);
    std::memcpy(ring.data + at, data, first);
    std::memcpy(ring.data, data + first, n - first);
  }
  staged_ += static_cast<uint32_t>(n);
}

bool Demuxer::StartStream() {
  const uint8_t* stage = staging_[current_];
  const size_t header_size = HeaderSize();
  const uint32_t length = ReadU32BE(stage + 4);
  const uint32_t headers = static_cast<uint32_t>(header_size + kTcpHeaderSize);
  if (ReadU32BE(stage) != kMuxProtocolTcp || length <= headers) return false;
  const uint8_t* tcp = stage + header_size;
  // An RST's payload is its reason, which the engine reads from the packet itself.
  if ((tcp[13] & kTcpFlagRst) != 0) return false;
  const auto found = slots_by_ports_.find(PortsKey(ReadU16BE(tcp), ReadU16BE(tcp + 2)));
  if (found == slots_by_ports_.end()) return false;
  const uint32_t slot = found->second;
  const Ring& ring = rings_[slot];
  const uint32_t read = ring_state_[2 * slot];
  const uint32_t write = ring_state_[2 * slot + 1];
  const uint32_t unread = write - read;
  // The sink's fast path sends a whole packet from staging with no copy into the ring at all.
  if (ring.direct && unread == 0) return false;
  // A payload that does not fit is reported as an overflow once complete, as any packet is.
  const uint32_t free_bytes = unread > ring.capacity ? 0 : ring.capacity - unread;
  if (length - headers > free_bytes) return false;
  streaming_ = true;
  orphaned_ = false;
  stream_slot_ = slot;
  stream_write_ = write;
  return true;
}

void Demuxer::Emit(uint32_t source, uint32_t offset, const uint8_t* packet, uint32_t length,
                   uint32_t* record) {
  const size_t header_size = HeaderSize();
  const uint32_t protocol = ReadU32BE(packet);
  record[2] = source;
  record[3] = offset;
  record[4] = length;
  record[5] = version_ == 2 ? ReadU32BE(packet + 12) : 0;
  // usbmuxd drops TCP packets shorter than header + 20 (usbmux.md §2.7); they are reported as
  // plain packets for the engine to log.
  if (protocol != kMuxProtocolTcp || length < header_size + kTcpHeaderSize) {
    record[0] = kEventPacket;
    record[1] = protocol;
    record[6] = 0;
    record[7] = length - static_cast<uint32_t>(header_size);
    record[8] = record[9] = record[10] = record[11] = record[12] = 0;
    return;
  }
  const uint8_t* tcp = packet + header_size;
  const uint32_t payload_length = length - static_cast<uint32_t>(header_size + kTcpHeaderSize);
  record[7] = payload_length;
  record[8] = ReadU32BE(tcp + 4);
  record[9] = ReadU32BE(tcp + 8);
  record[10] = tcp[13];
  record[11] = static_cast<uint32_t>(ReadU16BE(tcp + 14)) << 8;
  record[12] = 0;
  bool lost = false;
  if (streaming_) {
    streaming_ = false;
    lost = orphaned_;
    orphaned_ = false;
    if (!lost) {
      // The payload is already in the ring, after the write position: publish it.
      record[0] = kEventTcpData;
      record[1] = stream_slot_;
      record[6] = stream_write_;
      ring_state_[2 * stream_slot_ + 1] = stream_write_ + payload_length;
      // A FIN ends the connection: no later packet may go to the client directly (see below).
      if ((tcp[13] & kTcpFlagFin) != 0) rings_[stream_slot_].direct = false;
      return;
    }
  }
  const auto found = slots_by_ports_.find(PortsKey(ReadU16BE(tcp), ReadU16BE(tcp + 2)));
  if (found == slots_by_ports_.end()) {
    record[0] = kEventTcp;
    record[1] = kNoSlot;
    record[6] = 0;
    return;
  }
  const uint32_t slot = found->second;
  Ring& ring = rings_[slot];
  const uint32_t read = ring_state_[2 * slot];
  const uint32_t write = ring_state_[2 * slot + 1];
  record[1] = slot;
  record[6] = write;
  if (lost) {
    // Its connection closed while the payload streamed in (Close), and another opened on the same
    // ports: the bytes are gone, which the engine hears of as an overflow of the new connection.
    record[0] = kEventTcpOverflow;
    return;
  }
  // After an RST or a FIN the connection is over: a later packet for these ports (even in this
  // same transfer, before JS has seen the end) must not reach the client, so direct sends stop
  // here rather than when JS turns them off.
  const bool ends = (tcp[13] & (kTcpFlagRst | kTcpFlagFin)) != 0;
  // An RST's payload is the device's reason for the reset, not stream data (usbmux.md §3.7): it
  // is neither stored nor sent, so a client never receives it as bytes of its connection.
  if (payload_length == 0 || (tcp[13] & kTcpFlagRst) != 0) {
    if (ends) ring.direct = false;
    record[0] = kEventTcp;
    return;
  }
  // JS owns the read position; one that claims more unread bytes than the ring holds is treated
  // as a full ring rather than trusted.
  const uint32_t unread = write - read;
  const uint8_t* payload = tcp + kTcpHeaderSize;
  // The fast path: nothing waits before this payload, so it may go straight to the sink.
  const uint32_t sent = ring.direct && unread == 0 ? SendToSink(ring, payload, payload_length) : 0;
  if (ends) ring.direct = false;
  record[12] = sent;
  const uint32_t rest = payload_length - sent;
  record[0] = kEventTcpData;
  if (rest == 0) return;
  const uint32_t free_bytes = unread > ring.capacity ? 0 : ring.capacity - unread;
  if (rest > free_bytes) {
    record[0] = kEventTcpOverflow;
    return;
  }
  const uint32_t at = write & (ring.capacity - 1);
  const uint32_t first = std::min(rest, ring.capacity - at);
  std::memcpy(ring.data + at, payload + sent, first);
  std::memcpy(ring.data, payload + sent + first, rest - first);
  ring_state_[2 * slot + 1] = write + rest;
}

}  // namespace muxwire
