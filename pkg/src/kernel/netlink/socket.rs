//! The netlink socket: one request at a time, sequence-checked replies, ACK/error/extack
//! decoding, bounded retry of interrupted dumps. NETLINK_ROUTE requests are built from
//! netlink-packet-route messages; other families (NETLINK_NETFILTER) hand in raw messages and
//! share the same framing, sequencing and error decoding.

use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

pub(crate) use netlink_sys::protocols::NETLINK_NETFILTER;
use nix::libc;

use super::Netlink;
use super::attr::Attrs;
use super::error::{NetlinkError, NetlinkErrorKind, NlResult};
use crate::kernel::netns::{self, NetnsKey};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;

/// How many times a dump interrupted by concurrent changes (NLM_F_DUMP_INTR) is redone.
pub const DUMP_RETRIES: u32 = 5;

/// Receive buffer: twice the largest dump datagram the kernel makes (32 KiB), so every
/// reply is read with one recv(2). Never zeroed: untouched pages cost no memory.
const RX_SIZE: usize = 64 * 1024;

/// A bound netlink socket (NETLINK_ROUTE unless opened with [`NlSocket::open_protocol`]) with its request/reply buffers and sequence counter.
pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
    strict: bool,
    /// While batching ([`Netlink::batch_begin`]): the ACK-only requests queued, back to back,
    /// each with its own sequence number, and how many.
    batch: Option<(Vec<u8>, usize)>,
}

/// Requests of a batch sent per `send` (and answered before the next chunk goes out): their
/// ACKs (about 700 bytes of receive buffer each) stay well inside the default 208 KiB buffer.
const BATCH_CHUNK: usize = 128;

/// One request of [`NlSocket::exchange`].
pub(crate) enum Outgoing {
    /// An rtnetlink message netlink-packet-route builds.
    Route(RouteNetlinkMessage),
    /// A lookup of a type netlink-packet-route has no message for (RTM_GETNETCONF): its
    /// message type and payload, sent without NLM_F_ACK, so its one data reply (or an error)
    /// is its whole answer: one receive, not two.
    Get(u16, Vec<u8>),
}

/// The answer to one request of [`NlSocket::exchange`].
pub(crate) struct Answer {
    /// Its ACK (Ok), or the kernel's error; for a dump, its end.
    pub(crate) result: NlResult<()>,
    /// A dump the kernel flagged as interrupted by concurrent changes (NLM_F_DUMP_INTR).
    pub(crate) interrupted: bool,
}

/// What a reply handler sees: the message type and its payload (after the nlmsghdr).
pub(crate) type Handler<'h> = &'h mut dyn FnMut(u16, &[u8]) -> NlResult<()>;

impl NlSocket {
    /// Opens and binds a NETLINK_ROUTE socket in the calling thread's network namespace, with
    /// extended ACKs, capped ACKs and strict checking enabled where the kernel supports them.
    pub(crate) fn open() -> NlResult<NlSocket> {
        NlSocket::open_protocol(NETLINK_ROUTE)
    }

    /// Opens and binds a socket of netlink `protocol` (e.g. [`NETLINK_NETFILTER`]) in the
    /// calling thread's network namespace, with the same options as [`NlSocket::open`].
    pub(crate) fn open_protocol(protocol: isize) -> NlResult<NlSocket> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        // Optional features: older kernels lack them; failures there are harmless.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // NETLINK_GET_STRICT_CHK (4.20+): dumps are filtered by the kernel (table, protocol,
        // type, oif); without it the kernel sends everything and the caller filters.
        let strict = sock.set_netlink_get_strict_chk(true).is_ok();
        // Seed the sequence with something not repeating across short-lived processes.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(NlSocket {
            sock,
            seq: seed,
            tx: Vec::with_capacity(512),
            rx: Vec::with_capacity(RX_SIZE),
            strict,
            batch: None,
        })
    }

    /// Whether the kernel filters dumps for this socket (NETLINK_GET_STRICT_CHK is on).
    pub(crate) fn strict(&self) -> bool {
        self.strict
    }

    /// Turns NETLINK_GET_STRICT_CHK on or off (off: what a pre-4.20 kernel does).
    pub(crate) fn set_strict(&mut self, on: bool) -> NlResult<()> {
        self.sock.set_netlink_get_strict_chk(on)?;
        self.strict = on;
        Ok(())
    }

    /// The raw socket (e.g. for SO_NETNS_COOKIE).
    pub(crate) fn raw_fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Serializes `msg` with `flags` into the send buffer (sequence filled in at send time).
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let len = nl.buffer_len();
        self.tx.clear();
        self.tx.resize(len, 0);
        nl.serialize(&mut self.tx);
    }

    /// Sends the encoded request under a fresh sequence number, written into every message of
    /// the buffer (a batch is several messages); returns that number.
    fn transmit(&mut self) -> NlResult<u32> {
        self.send_numbered(false)
    }

    /// Writes fresh sequence numbers into the send buffer's messages (one for all, or with
    /// `each` one per message, consecutive, in order), sends the buffer and returns the first.
    fn send_numbered(&mut self, each: bool) -> NlResult<u32> {
        let first = self.seq.wrapping_add(1);
        self.seq = first;
        let mut seq = first;
        let mut off = 0;
        while off + NLMSG_HDRLEN <= self.tx.len() {
            self.tx[off + 8..off + 12].copy_from_slice(&seq.to_ne_bytes());
            self.seq = seq;
            if each {
                seq = seq.wrapping_add(1);
            }
            let t = &self.tx[off..off + 4];
            let len = u32::from_ne_bytes([t[0], t[1], t[2], t[3]]) as usize;
            if len < NLMSG_HDRLEN {
                break;
            }
            off += (len + 3) & !3;
        }
        self.send_tx()?;
        Ok(first)
    }

    /// Sends the send buffer as one datagram.
    fn send_tx(&mut self) -> NlResult<()> {
        loop {
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    self.tx.as_ptr().cast(),
                    self.tx.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
    }

    /// Receives one datagram into `rx` with one recv(2), returns its length. The buffer is
    /// larger than anything the kernel sends in one datagram (dump parts are at most 32 KiB,
    /// single replies a few KiB: twill never asks for VF lists); a larger one would be cut
    /// (MSG_TRUNC reports its full size), which is an error rather than a silent loss.
    fn recv_datagram(&mut self) -> NlResult<usize> {
        let fd = self.sock.as_raw_fd();
        let cap = self.rx.capacity();
        self.rx.clear();
        loop {
            // Into the buffer's spare capacity: never zeroed, so only the pages the kernel
            // writes are ever touched.
            let n = unsafe { libc::recv(fd, self.rx.as_mut_ptr().cast(), cap, libc::MSG_TRUNC) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err.into());
            }
            let n = n as usize;
            if n > cap {
                return Err(NetlinkError::decode(format!(
                    "a netlink datagram of {n} bytes exceeded the {cap}-byte receive buffer and \
                     was cut"
                )));
            }
            // SAFETY: recv(2) initialized the first n bytes, and n <= capacity.
            unsafe { self.rx.set_len(n) };
            return Ok(n);
        }
    }

    /// Reads replies to `seq` until the final ACK, error or NLMSG_DONE, passing every data
    /// message to `handler`. Returns whether the kernel flagged the dump as interrupted.
    /// A handler error is returned after the reply stream is drained, so the socket stays in step.
    fn collect(&mut self, seq: u32, handler: Handler<'_>) -> NlResult<bool> {
        let mut interrupted = false;
        let mut first_err: Option<NetlinkError> = None;
        loop {
            let n = self.recv_datagram()?;
            let buf = &self.rx[..n];
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
                let mseq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if len < NLMSG_HDRLEN || off + len > n {
                    return Err(NetlinkError::decode(format!(
                        "message length {len} at offset {off} exceeds datagram of {n} bytes"
                    )));
                }
                let payload = &buf[off + NLMSG_HDRLEN..off + len];
                off += (len + 3) & !3;
                if mseq != seq {
                    continue; // a stale reply to an earlier request: not ours to handle
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code = read_i32(payload)?;
                        if code == 0 {
                            return first_err.map_or(Ok(interrupted), Err);
                        }
                        let extack = error_extack(payload, flags);
                        return Err(NetlinkError::kernel(-code, extack));
                    }
                    NLMSG_DONE => {
                        let code = if payload.len() >= 4 {
                            read_i32(payload)?
                        } else {
                            0
                        };
                        if code < 0 {
                            let extack = if flags & NLM_F_ACK_TLVS != 0 {
                                extack_from_tlvs(&payload[4..])
                            } else {
                                None
                            };
                            return Err(NetlinkError::kernel(-code, extack));
                        }
                        return first_err.map_or(Ok(interrupted), Err);
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::decode("NLMSG_OVERRUN: data lost")),
                    _ => {
                        if first_err.is_none()
                            && let Err(e) = handler(ty, payload)
                        {
                            first_err = Some(e);
                        }
                    }
                }
            }
        }
    }

    /// Sends a request wanting an ACK (`extra` adds NLM_F_CREATE/EXCL/REPLACE/APPEND...);
    /// data replies (e.g. to a GET) go to `handler`.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        extra: u16,
        handler: Handler<'_>,
    ) -> NlResult<()> {
        self.encode(msg, NLM_F_REQUEST | NLM_F_ACK | extra);
        let seq = self.transmit()?;
        self.collect(seq, handler).map(|_| ())
    }

    /// Sends `msgs` (each with its flags; NLM_F_REQUEST | NLM_F_ACK are added) in one
    /// send(2), each under its own sequence number, and reads every answer: the kernel handles
    /// them in order, each on its own (a failing one does not stop the next). Returns the
    /// index and error of the first that failed, after all were answered. Data replies are
    /// ignored.
    pub(crate) fn ack_all(
        &mut self,
        msgs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<(), (usize, NetlinkError)> {
        let msgs = msgs
            .into_iter()
            .map(|(m, f)| (Outgoing::Route(m), f))
            .collect();
        let answers = self.exchange(msgs, &mut |_, _, _| {}).map_err(|e| (0, e))?;
        match answers
            .into_iter()
            .enumerate()
            .find_map(|(i, a)| a.result.err().map(|e| (i, e)))
        {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    /// Sends `msgs` in one send(2), each under its own sequence number, and reads every
    /// answer. A message whose flags hold NLM_F_DUMP is a dump (it ends with NLMSG_DONE; no
    /// ACK is asked for, the kernel goes on with the next message once the dump started); every
    /// other one gets NLM_F_REQUEST | NLM_F_ACK, except an [`Outgoing::Get`], answered by its
    /// one data reply. Data replies go to `handler` with the index of their request. One
    /// [`Answer`] per request, in order; Err only when the socket failed.
    pub(crate) fn exchange(
        &mut self,
        msgs: Vec<(Outgoing, u16)>,
        handler: &mut dyn FnMut(usize, u16, &[u8]),
    ) -> NlResult<Vec<Answer>> {
        let n = msgs.len();
        let mut by_reply = vec![false; n];
        self.tx.clear();
        for (i, (msg, extra)) in msgs.into_iter().enumerate() {
            let msg = match msg {
                Outgoing::Route(m) => m,
                Outgoing::Get(ty, payload) => {
                    by_reply[i] = true;
                    let len = NLMSG_HDRLEN + payload.len();
                    let start = self.tx.len();
                    self.tx.extend_from_slice(&(len as u32).to_ne_bytes());
                    self.tx.extend_from_slice(&ty.to_ne_bytes());
                    self.tx
                        .extend_from_slice(&(NLM_F_REQUEST | extra).to_ne_bytes());
                    self.tx.extend_from_slice(&[0; 8]); // sequence (set at send) and port id
                    self.tx.extend_from_slice(&payload);
                    self.tx.resize(start + ((len + 3) & !3), 0);
                    continue;
                }
            };
            let mut header = NetlinkHeader::default();
            header.flags = if extra & NLM_F_DUMP == NLM_F_DUMP {
                NLM_F_REQUEST | extra
            } else {
                NLM_F_REQUEST | NLM_F_ACK | extra
            };
            let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
            nl.finalize();
            let start = self.tx.len();
            self.tx.resize(start + nl.buffer_len(), 0);
            nl.serialize(&mut self.tx[start..]);
            self.tx.resize((self.tx.len() + 3) & !3, 0);
        }
        let first = self.send_numbered(true)?;
        self.collect_answers(first, n, &by_reply, handler)
    }

    /// Reads the ACKs or errors of the `n` requests numbered from `first`: one answer per
    /// request, in request order. Err only when the socket itself failed.
    fn collect_acks(&mut self, first: u32, n: usize) -> NlResult<Vec<NlResult<()>>> {
        let answers = self.collect_answers(first, n, &[], &mut |_, _, _| {})?;
        Ok(answers.into_iter().map(|a| a.result).collect())
    }

    /// Reads the answers of the `n` requests numbered from `first` (an ACK or error each, or
    /// for a dump its data and NLMSG_DONE), passing data messages to `handler` with their
    /// request's index. Err only when the socket itself failed.
    fn collect_answers(
        &mut self,
        first: u32,
        n: usize,
        by_reply: &[bool],
        handler: &mut dyn FnMut(usize, u16, &[u8]),
    ) -> NlResult<Vec<Answer>> {
        let mut answers: Vec<Option<NlResult<()>>> = (0..n).map(|_| None).collect();
        let mut interrupted = vec![false; n];
        let mut left = n;
        while left > 0 {
            let len = self.recv_datagram()?;
            let buf = &self.rx[..len];
            let mut off = 0;
            while off + NLMSG_HDRLEN <= len {
                let word = |i: usize| {
                    [
                        buf[off + i],
                        buf[off + i + 1],
                        buf[off + i + 2],
                        buf[off + i + 3],
                    ]
                };
                let mlen = u32::from_ne_bytes(word(0)) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
                let i = u32::from_ne_bytes(word(8)).wrapping_sub(first) as usize;
                if mlen < NLMSG_HDRLEN || off + mlen > len {
                    return Err(NetlinkError::decode(format!(
                        "message length {mlen} at offset {off} exceeds datagram of {len} bytes"
                    )));
                }
                let payload = &buf[off + NLMSG_HDRLEN..off + mlen];
                off += (mlen + 3) & !3;
                if i >= n || answers[i].is_some() {
                    continue; // an answer to another request
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted[i] = true;
                }
                let answer = match ty {
                    NLMSG_ERROR => {
                        let code = read_i32(payload)?;
                        if code == 0 {
                            Ok(())
                        } else {
                            Err(NetlinkError::kernel(-code, error_extack(payload, flags)))
                        }
                    }
                    NLMSG_DONE => match payload.get(..4).map(read_i32).transpose()? {
                        Some(code) if code < 0 => {
                            let extack = if flags & NLM_F_ACK_TLVS != 0 {
                                extack_from_tlvs(&payload[4..])
                            } else {
                                None
                            };
                            Err(NetlinkError::kernel(-code, extack))
                        }
                        _ => Ok(()),
                    },
                    NLMSG_NOOP => continue,
                    NLMSG_OVERRUN => return Err(NetlinkError::decode("NLMSG_OVERRUN: data lost")),
                    _ => {
                        handler(i, ty, payload);
                        if !by_reply.get(i).copied().unwrap_or(false) {
                            continue;
                        }
                        Ok(()) // a lookup sent without NLM_F_ACK: its reply is its answer
                    }
                };
                answers[i] = Some(answer);
                left -= 1;
            }
        }
        Ok(answers
            .into_iter()
            .zip(interrupted)
            .map(|(a, interrupted)| Answer {
                result: a.unwrap_or(Ok(())),
                interrupted,
            })
            .collect())
    }

    /// Sends a request and waits for its ACK, ignoring data replies. While batching, the
    /// request is queued instead and its answer comes from [`NlSocket::flush_batch`].
    pub(crate) fn ack(&mut self, msg: RouteNetlinkMessage, extra: u16) -> NlResult<()> {
        if self.batch.is_some() {
            self.encode(msg, NLM_F_REQUEST | NLM_F_ACK | extra);
            if let Some((buf, n)) = &mut self.batch {
                buf.extend_from_slice(&self.tx);
                *n += 1;
            }
            return Ok(());
        }
        self.request(msg, extra, &mut |_, _| Ok(()))
    }

    /// Sends every queued request, [`BATCH_CHUNK`] per send, each under its own sequence
    /// number, and reads their ACKs: one result per request, in queue order. Err only when the
    /// socket itself failed (the requests not answered then count as failed).
    fn flush_batch(&mut self) -> NlResult<Vec<NlResult<()>>> {
        let Some((buf, count)) = self.batch.take() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<NlResult<()>> = Vec::with_capacity(count);
        let mut off = 0;
        while off < buf.len() {
            // One chunk: up to BATCH_CHUNK messages, numbered by send_numbered.
            self.tx.clear();
            let mut n = 0;
            while off + NLMSG_HDRLEN <= buf.len() && n < BATCH_CHUNK {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                if len < NLMSG_HDRLEN || off + len > buf.len() {
                    return Err(NetlinkError::decode("malformed batch"));
                }
                self.tx.extend_from_slice(&buf[off..off + len]);
                self.tx.resize((self.tx.len() + 3) & !3, 0);
                off += (len + 3) & !3;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let first = self.send_numbered(true)?;
            out.extend(self.collect_acks(first, n)?);
        }
        Ok(out)
    }

    /// Dumps (NLM_F_DUMP), keeping what `parse` makes of each message; an interrupted dump
    /// (NLM_F_DUMP_INTR) is redone from scratch up to [`DUMP_RETRIES`] times.
    pub(crate) fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        parse: &mut dyn FnMut(u16, &[u8]) -> Option<T>,
    ) -> NlResult<Vec<T>> {
        self.encode(msg, NLM_F_REQUEST | NLM_F_DUMP);
        let mut out = Vec::new();
        for _ in 0..=DUMP_RETRIES {
            out.clear();
            let seq = self.transmit()?;
            let interrupted = self.collect(seq, &mut |ty, p| {
                if let Some(v) = parse(ty, p) {
                    out.push(v);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkErrorKind::DumpInterrupted(DUMP_RETRIES + 1).into())
    }
}

impl NlSocket {
    /// Sends `msgs` (complete netlink messages of this socket's family, sequence left 0) under
    /// one fresh sequence number and reads the replies as [`NlSocket::request`] does: data
    /// messages go to `handler`, the first ACK or error ends it. For a batch, ask for an ACK on
    /// its last message only: any failing message is answered with an error first.
    pub(crate) fn request_raw(&mut self, msgs: &[u8], handler: Handler<'_>) -> NlResult<()> {
        self.tx.clear();
        self.tx.extend_from_slice(msgs);
        let seq = self.transmit()?;
        self.collect(seq, handler).map(|_| ())
    }

    /// Dumps with the raw request `msg` (which carries NLM_F_DUMP), keeping what `parse` makes
    /// of each message; interrupted dumps are redone as in [`NlSocket::dump`].
    pub(crate) fn dump_raw<T>(
        &mut self,
        msg: &[u8],
        parse: &mut dyn FnMut(u16, &[u8]) -> Option<T>,
    ) -> NlResult<Vec<T>> {
        self.tx.clear();
        self.tx.extend_from_slice(msg);
        let mut out = Vec::new();
        for _ in 0..=DUMP_RETRIES {
            out.clear();
            let seq = self.transmit()?;
            let interrupted = self.collect(seq, &mut |ty, p| {
                if let Some(v) = parse(ty, p) {
                    out.push(v);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkErrorKind::DumpInterrupted(DUMP_RETRIES + 1).into())
    }
}

impl Netlink {
    /// Starts a batch: from now on every change that only wants an ACK (route, neighbour and
    /// FDB writes and deletes) is queued and answered `Ok` at once; requests that read (dumps,
    /// lookups) still go out one by one. [`Netlink::batch_finish`] sends the queue.
    pub fn batch_begin(&mut self) {
        if self.sock.batch.is_none() {
            self.sock.batch = Some((Vec::new(), 0));
        }
    }

    /// How many changes the current batch holds (0 when none is open).
    pub fn batch_len(&self) -> usize {
        self.sock.batch.as_ref().map_or(0, |(_, n)| *n)
    }

    /// Sends the batch's changes back to back (chunked so their ACKs never overflow the
    /// receive buffer) and collects every ACK: one result per queued change, in order, so one
    /// refused change fails only itself. Err when the socket failed (nothing more is known).
    pub fn batch_finish(&mut self) -> NlResult<Vec<NlResult<()>>> {
        self.sock
            .flush_batch()
            .map_err(|e| e.with_op(|| "send a batch of changes".into()))
    }

    /// Whether the kernel filters this socket's dumps (NETLINK_GET_STRICT_CHK, kernel 4.20+);
    /// every listing is correct either way, strict ones just carry less.
    pub fn strict_dumps(&self) -> bool {
        self.sock.strict()
    }

    /// Turns kernel-side dump filtering on or off; off behaves like a kernel before 4.20
    /// (tests use it to exercise the fallback).
    pub fn set_strict_dumps(&mut self, on: bool) -> NlResult<()> {
        self.sock
            .set_strict(on)
            .map_err(|e| e.with_op(|| "set NETLINK_GET_STRICT_CHK".into()))
    }

    /// The key naming this socket's namespace in state files: its cookie, or its nsfs
    /// identity on kernels without SO_NETNS_COOKIE.
    pub fn netns_key(&self) -> NlResult<NetnsKey> {
        netns::socket_netns_key(self.sock.raw_fd())
            .map_err(|e| NetlinkError::from(e).with_op(|| "identify the namespace".into()))
    }

    /// The nsfs (st_dev, st_ino) of this socket's namespace (SIOCGSKNS, kernel 4.9+).
    pub fn netns_inode(&self) -> NlResult<(u64, u64)> {
        netns::socket_netns_inode(self.sock.raw_fd())
            .map_err(|e| NetlinkError::from(e).with_op(|| "SIOCGSKNS".into()))
    }
}

fn read_i32(p: &[u8]) -> NlResult<i32> {
    p.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| NetlinkError::decode("short NLMSG_ERROR/NLMSG_DONE"))
}

/// The extack message of an NLMSG_ERROR payload: error code, echoed request header (and the
/// request payload unless NLM_F_CAPPED), then TLVs when NLM_F_ACK_TLVS.
fn error_extack(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let hdr = payload.get(4..4 + NLMSG_HDRLEN)?;
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let l = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        (l + 3) & !3
    };
    extack_from_tlvs(payload.get(4 + echoed..)?)
}

fn extack_from_tlvs(tlvs: &[u8]) -> Option<String> {
    let mut msg: Option<String> = None;
    let mut missing: Option<u32> = None;
    for (ty, val) in Attrs::new(tlvs) {
        match ty {
            NLMSGERR_ATTR_MSG => {
                let end = val.iter().position(|&b| b == 0).unwrap_or(val.len());
                msg = Some(String::from_utf8_lossy(&val[..end]).into_owned());
            }
            NLMSGERR_ATTR_MISS_TYPE if val.len() >= 4 => {
                missing = Some(u32::from_ne_bytes([val[0], val[1], val[2], val[3]]));
            }
            _ => {}
        }
    }
    match (msg, missing) {
        (Some(m), Some(t)) => Some(format!("{m} (missing attribute type {t})")),
        (Some(m), None) => Some(m),
        (None, Some(t)) => Some(format!("missing attribute type {t}")),
        (None, None) => None,
    }
}
