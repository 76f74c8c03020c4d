//! nft-netlink: the kernel half of the backend. A [`Table`] of `nft_backend` sent to the kernel as
//! one nftables transaction through libnftnl and libmnl, every message acknowledged, and read
//! back.
//!
//! The only crate of the project with `unsafe`: libnftnl is a C library. Each object is built in
//! a libnftnl struct that a guard frees on drop, serialised into the batch, and the batch is sent
//! on one netfilter socket. The kernel applies a batch all or nothing.

#![allow(unsafe_code)]

mod error;
mod objects;
mod read;
mod rules;

use std::io;
use std::time::{Duration, Instant};

use nftnl::{Batch, FinalizedBatch, MsgType};
use nftnl_sys::libc;

use nft_backend::diff::{diff, fit_sizes, Plan};
use nft_backend::nft::{Set, Table};
use objects::{
    chain_message, delete_chain_message, delete_set_message, element_messages, flush_chain_message,
    flush_set_message, set_messages, Ids, Message,
};
use rules::rule_message;

pub use error::NetlinkError;
pub use read::{expected, ChainListing, ElementListing, Listing, SetListing};

/// How a transaction went.
#[derive(Clone, Copy, Debug)]
pub struct ApplyReport {
    pub n_messages: usize,
    pub n_elements: usize,
    pub elapsed: Duration,
}

/// The messages that replace the table: create it if missing, delete it, then define it anew:
/// chains, sets, maps (whose elements jump to the chains), then rules.
fn full_messages(table: &Table) -> Result<Vec<Message>, NetlinkError> {
    let mut ids = Ids {
        next: 0,
        by_name: Vec::new(),
    };
    let mut out = vec![Message::table(false), Message::table(true), Message::table(false)];
    for chain in &table.chains {
        out.push(chain_message(chain)?);
    }
    for set in table.sets.iter().filter(|s| !s.is_map()) {
        out.extend(set_messages(set, &mut ids)?);
    }
    for set in table.sets.iter().filter(|s| s.is_map()) {
        out.extend(set_messages(set, &mut ids)?);
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            out.extend(rule_message(&chain.name, rule, &mut ids)?);
        }
    }
    Ok(out)
}

/// The messages of an incremental plan, in an order every step of which the kernel accepts:
/// new sets and chains first; chains to be rewritten emptied (and, when sets are recreated,
/// chains to be deleted too, so no rule holds a set being deleted); recreated sets deleted and
/// added again; new maps (their elements jump to chains that exist by now); rules (which may
/// use all of these); element changes; then what nothing refers to any more.
fn plan_messages(plan: &Plan) -> Result<Vec<Message>, NetlinkError> {
    let mut ids = Ids {
        next: 0,
        by_name: Vec::new(),
    };
    let mut out = Vec::new();
    let is_map = |s: &&Set| s.is_map();
    for set in plan.add_sets.iter().filter(|s| !is_map(s)) {
        out.extend(set_messages(set, &mut ids)?);
    }
    for chain in &plan.add_chains {
        out.push(chain_message(chain)?);
    }
    for chain in &plan.rewrite_chains {
        out.push(flush_chain_message(&chain.name)?);
    }
    if !plan.replace_sets.is_empty() {
        for name in &plan.del_chains {
            out.push(flush_chain_message(name)?);
        }
    }
    for set in &plan.replace_sets {
        out.push(delete_set_message(&set.name)?);
    }
    for set in plan.replace_sets.iter().filter(|s| !is_map(s)) {
        out.extend(set_messages(set, &mut ids)?);
    }
    for set in plan.add_sets.iter().chain(&plan.replace_sets).filter(is_map) {
        out.extend(set_messages(set, &mut ids)?);
    }
    for chain in plan.add_chains.iter().chain(&plan.rewrite_chains) {
        for rule in &chain.rules {
            out.extend(rule_message(&chain.name, rule, &mut ids)?);
        }
    }
    for set in &plan.refill_sets {
        out.push(flush_set_message(set, &mut ids)?);
        out.extend(element_messages(set, &mut ids, libc::NFT_MSG_NEWSETELEM)?);
    }
    for set in &plan.del_elements {
        out.extend(element_messages(set, &mut ids, libc::NFT_MSG_DELSETELEM)?);
    }
    let (maps, others): (Vec<&Set>, Vec<&Set>) = plan.add_elements.iter().partition(|s| s.is_map());
    for set in others.into_iter().chain(maps) {
        out.extend(element_messages(set, &mut ids, libc::NFT_MSG_NEWSETELEM)?);
    }
    for name in &plan.del_chains {
        out.push(delete_chain_message(name)?);
    }
    for name in &plan.del_sets {
        out.push(delete_set_message(name)?);
    }
    Ok(out)
}

/// An upper bound on one message's size: 512 elements of the largest kind (a map element
/// with a chain name, under 100 bytes), or one rule.
const MESSAGE_BOUND: u32 = 64 * 1024;

fn transact(socket: &mnl::Socket, messages: &[Message]) -> Result<(), NetlinkError> {
    // The whole batch must go out in one send: the kernel reads one send as one transaction,
    // and a batch split over pages would reach it as several. So one page holds it all.
    let n = u32::try_from(messages.len() + 2).unwrap_or(u32::MAX);
    let page = n.saturating_mul(MESSAGE_BOUND).min(u32::MAX / 2);
    let mut batch = Batch::with_page_size(page);
    for m in messages {
        batch.add(m, MsgType::Add);
    }
    let batch = batch.finalize();
    if batch.iter().count() != 1 {
        return Err(NetlinkError::Send(io::Error::other(
            "the batch did not fit one buffer",
        )));
    }
    send(socket, &batch, messages)
}

/// One netfilter socket, kept open across transactions.
///
/// Closing a netfilter socket makes the kernel wait for the previous transactions' objects to
/// be released (an RCU grace period, 10 to 20 ms on this machine) when any were removed: a
/// transaction that deletes one set element is acknowledged in microseconds, but the close
/// that follows blocks. A writer that holds one session pays that wait never; the free
/// functions below open a session per call and pay it once, when it is dropped.
///
/// The socket belongs to the network namespace it was opened in. After an error the socket
/// may hold unread acknowledgements, so it is dropped and the next call opens a fresh one.
pub struct Session {
    socket: Option<mnl::Socket>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("open", &self.socket.is_some())
            .finish()
    }
}

impl Session {
    /// A session in the calling thread's network namespace.
    pub fn open() -> Result<Session, NetlinkError> {
        Ok(Session {
            socket: Some(open_socket()?),
        })
    }

    /// Runs `f` on the socket; an error discards the socket (it may hold unread replies).
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mnl::Socket) -> Result<T, NetlinkError>,
    ) -> Result<T, NetlinkError> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open_socket()?,
        };
        let result = f(&socket);
        if result.is_ok() {
            self.socket = Some(socket);
        }
        result
    }

    /// Replaces `table inet netfence` with `table` in one transaction.
    pub fn apply_full(&mut self, table: &Table) -> Result<ApplyReport, NetlinkError> {
        let start = Instant::now();
        let messages = full_messages(table)?;
        self.with(|socket| transact(socket, &messages))?;
        Ok(ApplyReport {
            n_messages: messages.len(),
            n_elements: table.n_elements(),
            elapsed: start.elapsed(),
        })
    }

    /// Turns the kernel's table from `old` (what was applied last) into `new` with only the
    /// differences, in one transaction. An empty difference sends nothing.
    ///
    /// `new`'s set sizes are first fitted to `old`'s ([`fit_sizes`]): a set that still fits
    /// the size it has in the kernel keeps it. So `new` is, after the call, exactly what the
    /// kernel holds (what [`Session::verify`] and the next `apply_diff` must be given).
    pub fn apply_diff(&mut self, old: &Table, new: &mut Table) -> Result<ApplyReport, NetlinkError> {
        let start = Instant::now();
        fit_sizes(old, new);
        let plan = diff(old, new);
        if plan.is_empty() {
            return Ok(ApplyReport {
                n_messages: 0,
                n_elements: 0,
                elapsed: start.elapsed(),
            });
        }
        let messages = plan_messages(&plan)?;
        self.with(|socket| transact(socket, &messages))?;
        Ok(ApplyReport {
            n_messages: messages.len(),
            n_elements: plan.n_element_changes(),
            elapsed: start.elapsed(),
        })
    }

    /// What the kernel holds of `table inet netfence`; `None` when there is no such table.
    pub fn read(&mut self) -> Result<Option<Listing>, NetlinkError> {
        self.with(read::read)
    }

    /// Reads the table back and compares it with what `table` should have made of it.
    pub fn verify(&mut self, table: &Table) -> Result<(), NetlinkError> {
        let want = expected(table)?;
        match self.read()? {
            None => Err(NetlinkError::Mismatch(format!(
                "table inet {} is missing",
                nft_backend::TABLE
            ))),
            Some(got) if got == want => Ok(()),
            Some(got) => Err(NetlinkError::Mismatch(got.changes_from(&want).join("; "))),
        }
    }

    /// Removes `table inet netfence` (nothing else), if it exists.
    pub fn delete_table(&mut self) -> Result<(), NetlinkError> {
        self.with(|socket| transact(socket, &[Message::table(false), Message::table(true)]))
    }
}

/// [`Session::apply_full`] on a session of its own.
pub fn apply_full(table: &Table) -> Result<ApplyReport, NetlinkError> {
    Session::open()?.apply_full(table)
}

/// [`Session::apply_diff`] on a session of its own.
pub fn apply_diff(old: &Table, new: &mut Table) -> Result<ApplyReport, NetlinkError> {
    Session::open()?.apply_diff(old, new)
}

/// [`Session::verify`] on a session of its own.
pub fn verify(table: &Table) -> Result<(), NetlinkError> {
    Session::open()?.verify(table)
}

/// [`Session::read`] on a session of its own.
pub fn read() -> Result<Option<Listing>, NetlinkError> {
    Session::open()?.read()
}

/// [`Session::delete_table`] on a session of its own.
pub fn delete_table() -> Result<(), NetlinkError> {
    Session::open()?.delete_table()
}

fn open_socket() -> Result<mnl::Socket, NetlinkError> {
    mnl::Socket::new(mnl::Bus::Netfilter).map_err(NetlinkError::Socket)
}

/// Sizes the socket's buffers for one batch: the whole batch goes out in one send (one
/// transaction), and every message's acknowledgement must fit before it is read. The kernel's
/// defaults are far too small for a batch of thousands of messages (ENOBUFS).
fn size_buffers(socket: &mnl::Socket, batch_bytes: usize, n_acks: usize) -> io::Result<()> {
    // An acknowledgement costs about a kilobyte of receive buffer in the kernel's accounting.
    let rcv = (n_acks * 1024).max(1 << 20);
    let snd = (batch_bytes * 2).max(1 << 20);
    // SAFETY: the descriptor belongs to the live socket; the option values are plain ints that
    // outlive the calls.
    unsafe {
        let fd = mnl::mnl_sys::mnl_socket_get_fd(socket.as_raw_socket());
        for (option, size) in [(libc::SO_RCVBUFFORCE, rcv), (libc::SO_SNDBUFFORCE, snd)] {
            let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            let ret = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn send(socket: &mnl::Socket, batch: &FinalizedBatch, messages: &[Message]) -> Result<(), NetlinkError> {
    let portid = socket.portid();
    let batch_bytes: usize = batch.iter().map(<[u8]>::len).sum();
    size_buffers(socket, batch_bytes, messages.len() + 2).map_err(NetlinkError::Socket)?;
    socket.send_all(batch).map_err(NetlinkError::Send)?;
    // An aligned buffer, as libmnl requires for the headers it reads.
    let mut words = vec![0u64; nftnl::nft_nlmsg_maxsize() as usize / 8];
    let len = words.len() * 8;
    // SAFETY: a u64 buffer viewed as bytes: same memory, stricter alignment, exclusive borrow.
    let buffer = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
    let seqs = batch.sequence_numbers();
    let first = seqs.start;
    let mut expected = seqs;
    while !expected.is_empty() {
        let received = socket.recv(buffer).map_err(NetlinkError::Receive)?;
        for message in received {
            let message = message.map_err(NetlinkError::Receive)?;
            // The header's sequence number says which message the kernel answers.
            let seq = message
                .get(8..12)
                .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            if let Err(source) = mnl::cb_run(message, seq, portid) {
                if source.raw_os_error() == Some(libc::EPERM) {
                    return Err(NetlinkError::Permission);
                }
                // The kernel aborts the whole batch at the first error; report that message.
                // The batch's begin message holds the first sequence number.
                let object = seq
                    .checked_sub(first + 1)
                    .and_then(|i| messages.get(i as usize))
                    .map_or_else(|| format!("message {seq}"), |m| m.what.clone());
                return Err(NetlinkError::Refused { object, source });
            }
            if expected.next().is_none() {
                break;
            }
        }
    }
    Ok(())
}
