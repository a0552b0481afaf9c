// The device→host demuxer core (issue 6): reads the bulk IN pipe as a byte stream of mux packets,
// reassembles packets that span transfers, and appends each TCP payload of a known connection to
// that connection's ring buffer. src/accel/demux-core.ts is its TypeScript twin; the two must agree
// bit for bit (test/accel/demuxer-parity.test.ts).
//
// All memory is JavaScript's, handed in and pinned by the binding (demuxer-binding.cc): the two
// staging buffers, the ring buffers and the shared ring positions. JS reads payloads straight out
// of the rings (zero copy) and releases them by advancing the read position; nothing is copied
// twice and nothing per packet is allocated.
//
// Per packet, Push writes one event record of kEventFields u32 into `events`:
//
//   [0] kind        kEventPacket (not a well-formed TCP packet: VERSION, CONTROL, short TCP…),
//                   kEventTcp (TCP, payload not stored: unknown connection, empty payload, or
//                   an RST, whose payload is its reason text and never connection data),
//                   kEventTcpData (TCP, payload appended to the connection's ring),
//                   kEventTcpOverflow (TCP, payload larger than the ring's free space: dropped)
//   [1] protocol for kEventPacket; the connection's slot for TCP kinds (kNoSlot when unknown)
//   [2] source      0 = the pushed transfer, 1 or 2 = staging buffer A or B (reassembled packet)
//   [3] offset of the packet in its source
//   [4] length of the packet (header included)
//   [5] v2: tx_seq << 16 | rx_seq of the packet; v1: 0
//   [6] TCP kinds: the ring's write position (total bytes written, u32) before this payload
//   [7] payload length (TCP kinds: after the 20-byte TCP header; else after the mux header)
//   [8] TCP kinds: seq   [9] ack   [10] flags   [11] window in bytes (the field << 8); else 0
//   [12] kEventTcpData: payload bytes written straight to the connection's sink (see below),
//        the rest (payload length − this) appended to the ring; else 0
//
// so that the engine reads everything it needs per packet from one array, without making a view
// of the packet (docs/ARCHITECTURE.md, conventions §6: offsets and numbers, not many small
// objects).
//
// Ring positions, shared with JS in `ring_state`: [2·slot] = read position, [2·slot+1] = write
// position, both running byte totals modulo 2^32; unread = write − read. JS advances the read
// position as it consumes; the demuxer advances the write position as it appends.
//
// Sinks (the relay's fast path). A connection may have a sink: a socket (the daemon's client)
// that its payloads go to with no JavaScript in between. While the sink is `direct` and the ring
// holds nothing unread, a payload is sent to the socket from where it lies (the transfer or a
// staging buffer) with a non-blocking send: no copy into the ring. Whatever the socket does not
// take at once goes into the ring as usual, and `direct` turns off: JS writes the ring's bytes
// through its own socket object and turns `direct` back on once they are all written, so bytes
// reach the socket in order. An RST or FIN from the device turns `direct` off (the payload of a
// FIN still goes out first), so nothing behind the end reaches the socket. The demuxer owns a
// duplicate of the socket's descriptor, so a socket JS closes is never confused with a new one
// that reuses the number.
#ifndef MUXWIRE_NATIVE_DEMUXER_H_
#define MUXWIRE_NATIVE_DEMUXER_H_

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace muxwire {

constexpr size_t kEventFields = 13;
constexpr uint32_t kEventPacket = 1;
constexpr uint32_t kEventTcp = 2;
constexpr uint32_t kEventTcpData = 3;
constexpr uint32_t kEventTcpOverflow = 4;
constexpr uint32_t kNoSlot = 0xFFFFFFFF;
constexpr uint32_t kSourceTransfer = 0;
// Written to events[0] by a failed Push when the bad packet began in an earlier transfer.
constexpr uint32_t kOffsetEarlier = 0xFFFFFFFF;
constexpr int64_t kDemuxBadLength = -1;

class Demuxer {
 public:
  // `staging_a`/`staging_b` hold `max_packet` bytes each; `ring_state` holds 2 u32 per slot.
  Demuxer(int version, uint32_t max_packet, uint8_t* staging_a, uint8_t* staging_b,
          uint32_t* ring_state, size_t max_connections);

  void SetVersion(int version);
  int version() const { return version_; }
  size_t max_connections() const { return rings_.size(); }
  bool IsOpen(uint32_t slot) const { return rings_[slot].data != nullptr; }
  // Whether a connection with these ports is open.
  bool HasPorts(uint16_t sport, uint16_t dport) const;

  // Registers a connection under the ports its device packets carry (sport = device port,
  // dport = host port). The caller checks the slot is free and the ports are unused. Positions
  // start at 0.
  void Open(uint32_t slot, uint16_t sport, uint16_t dport, uint8_t* ring, uint32_t capacity);
  void Close(uint32_t slot);

  // Gives an open connection a sink: `fd` (owned from here on, closed by DetachSink or Close) is
  // a non-blocking-capable stream socket. Starts with direct sends off.
  void AttachSink(uint32_t slot, int fd);
  void SetDirect(uint32_t slot, bool direct);
  bool HasSink(uint32_t slot) const { return rings_[slot].sink >= 0; }
  void DetachSink(uint32_t slot);

  // Consumes one IN transfer. Returns the number of event records written, or kDemuxBadLength
  // with events[0] = offset of the bad packet in this transfer (kOffsetEarlier if it began in an
  // earlier one) and events[1] = its declared length; a failed demuxer fails every later Push the
  // same way. `events` must hold MaxEvents(size) records.
  int64_t Push(const uint8_t* data, size_t size, uint32_t* events);

  // The most records one Push of `size` bytes can write.
  size_t MaxEvents(size_t size) const { return 1 + size / HeaderSize(); }
  // Bytes of a packet still being reassembled.
  uint32_t staged() const { return staged_; }

 private:
  struct Ring {
    uint8_t* data = nullptr;
    uint32_t capacity = 0;
    uint32_t key = 0;
    int sink = -1;
    bool direct = false;
  };

  // Sends up to `length` bytes to the ring's sink without blocking; returns how many it took.
  // Anything short of all of them turns direct sends off.
  uint32_t SendToSink(Ring& ring, const uint8_t* data, uint32_t length);

  size_t HeaderSize() const;
  bool LengthOk(uint32_t length) const;
  void Emit(uint32_t source, uint32_t offset, const uint8_t* packet, uint32_t length,
            uint32_t* record);
  int64_t Fail(uint32_t offset, uint32_t length, uint32_t* events);
  // Appends `n` bytes of the packet being reassembled (never past its end): headers to staging,
  // the payload to staging or, once StartStream said so, straight to its connection's ring.
  void Append(const uint8_t* data, size_t n);
  // With the headers staged: whether the payload can go straight to its connection's ring (a TCP
  // packet, not an RST, for an open connection without the sink fast path, that fits).
  bool StartStream();

  int version_;
  uint32_t max_packet_;
  uint8_t* staging_[2];
  uint32_t* ring_state_;
  std::vector<Ring> rings_;
  std::unordered_map<uint32_t, uint32_t> slots_by_ports_;
  // Which staging buffer receives the packet being reassembled, and how much of it is there.
  int current_ = 0;
  uint32_t staged_ = 0;
  // The payload of the packet being reassembled goes to ring `stream_slot_` from position
  // `stream_write_` on (published when the packet is complete); `orphaned_` once that connection
  // closed, after which the rest of the payload is dropped.
  bool streaming_ = false;
  bool orphaned_ = false;
  uint32_t stream_slot_ = 0;
  uint32_t stream_write_ = 0;
  bool failed_ = false;
  uint32_t failed_offset_ = 0;
  uint32_t failed_length_ = 0;
};

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_DEMUXER_H_
