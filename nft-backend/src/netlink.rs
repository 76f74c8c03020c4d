//! The netlink face: a [`Table`] sent to the kernel as one nftables transaction through libnftnl
//! and libmnl, every message acknowledged.
//!
//! The only module of the project with `unsafe`: libnftnl is a C library. Each object is built in
//! a libnftnl struct that a guard frees on drop, serialised into the batch, and the batch is sent
//! on one netfilter socket. The kernel applies a batch all or nothing.

use std::ffi::{c_void, CString};
use std::io;
use std::net::IpAddr;
use std::os::raw::c_char;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use nftnl::{Batch, FinalizedBatch, MsgType, NlMsg};
use nftnl_sys::{self as sys, libc};
use policy_compiler::Protocol;

use crate::nft::{Addr, Chain, Family, Hook, Match, Rule, Set, SetKind, Table, Verdict};
use crate::TABLE;

/// What failed, in which phase, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a netfilter socket (netfence needs CAP_NET_ADMIN): {0}")]
    Socket(#[source] io::Error),
    #[error("netlink: sending the batch failed: {0}")]
    Send(#[source] io::Error),
    #[error("netlink: the kernel refused {object}: {source}; the transaction was not applied")]
    Refused {
        object: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: reading acknowledgements failed: {0}")]
    Receive(#[source] io::Error),
    #[error("netlink: {0} contains a NUL byte")]
    Name(String),
}

impl NetlinkError {
    /// Whether the same transaction may succeed later (a busy kernel, a full socket buffer).
    pub fn is_retryable(&self) -> bool {
        match self {
            NetlinkError::Send(_) | NetlinkError::Receive(_) => true,
            NetlinkError::Refused { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ENOBUFS)
                )
            }
            NetlinkError::Socket(_) | NetlinkError::Name(_) => false,
        }
    }
}

/// How a transaction went.
#[derive(Clone, Copy, Debug)]
pub struct ApplyReport {
    pub n_messages: usize,
    pub n_elements: usize,
    pub elapsed: Duration,
}

const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
/// Elements per NEWSETELEM message: keeps every message far below the netlink size limit.
const ELEMENTS_PER_MESSAGE: usize = 256;

// nft's datatype numbers, as it stores them in set key types.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP6_TYPE: u32 = 29;
const TYPE_BITS: u32 = 6;
// nft's user data types for sets and its big-endian byte order marker.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_COMMENT: u8 = 7;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// The kernel keeps at most this much user data per object.
const USERDATA_MAXLEN: u32 = 256;

fn cstring(text: &str) -> Result<CString, NetlinkError> {
    CString::new(text).map_err(|_| NetlinkError::Name(text.to_string()))
}

/// User data: a TLV buffer that nft reads back (comments, key byte order).
struct Udata(NonNull<sys::nftnl_udata_buf>);

impl Udata {
    fn new() -> Udata {
        // SAFETY: allocation of a buffer of the documented maximum; checked for NULL.
        let buf = unsafe { sys::nftnl_udata_buf_alloc(USERDATA_MAXLEN) };
        Udata(NonNull::new(buf).expect("libnftnl allocation"))
    }

    fn put_u32(&mut self, kind: u8, value: u32) {
        // SAFETY: the buffer is live; libnftnl bounds-checks the write and returns false when full.
        unsafe { sys::nftnl_udata_put_u32(self.0.as_ptr(), kind, value) };
    }

    fn put_str(&mut self, kind: u8, text: &CString) {
        // SAFETY: as above; `text` is NUL-terminated.
        unsafe { sys::nftnl_udata_put_strz(self.0.as_ptr(), kind, text.as_ptr()) };
    }

    fn bytes(&self) -> (*const c_void, u32) {
        // SAFETY: the buffer is live; data and length describe its filled part.
        unsafe {
            (
                sys::nftnl_udata_buf_data(self.0.as_ptr()),
                sys::nftnl_udata_buf_len(self.0.as_ptr()),
            )
        }
    }
}

impl Drop for Udata {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_udata_buf_alloc, freed once.
        unsafe { sys::nftnl_udata_buf_free(self.0.as_ptr()) };
    }
}

/// One message of the batch: the object it writes, what it is for errors, and its type.
enum Msg {
    Table { delete: bool },
    Chain(NonNull<sys::nftnl_chain>),
    Set(NonNull<sys::nftnl_set>),
    Elements(NonNull<sys::nftnl_set>),
    Rule(NonNull<sys::nftnl_rule>),
}

struct Message {
    msg: Msg,
    what: String,
}

// SAFETY: each message writes its object into the buffer libnftnl hands it (at least
// nft_nlmsg_maxsize bytes), with a header built by nftnl_nlmsg_build_hdr.
unsafe impl NlMsg for Message {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let buf = buf.cast::<c_char>();
        let create = (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16;
        // SAFETY: the caller gives a buffer large enough for one message; the objects are live.
        unsafe {
            match &self.msg {
                Msg::Table { delete } => {
                    let t = sys::nftnl_table_alloc();
                    let name = CString::new(TABLE).expect("constant name");
                    sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
                    sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FAMILY as u16, u32::from(NFPROTO_INET));
                    let (kind, flags) = if *delete {
                        (libc::NFT_MSG_DELTABLE, libc::NLM_F_ACK as u16)
                    } else {
                        (libc::NFT_MSG_NEWTABLE, create)
                    };
                    let hdr = sys::nftnl_nlmsg_build_hdr(buf, kind as u16, NFPROTO_INET, flags, seq);
                    sys::nftnl_table_nlmsg_build_payload(hdr, t);
                    sys::nftnl_table_free(t);
                }
                Msg::Chain(c) => {
                    let hdr = sys::nftnl_nlmsg_build_hdr(
                        buf,
                        libc::NFT_MSG_NEWCHAIN as u16,
                        NFPROTO_INET,
                        create,
                        seq,
                    );
                    sys::nftnl_chain_nlmsg_build_payload(hdr, c.as_ptr());
                }
                Msg::Set(s) => {
                    let hdr = sys::nftnl_nlmsg_build_hdr(
                        buf,
                        libc::NFT_MSG_NEWSET as u16,
                        NFPROTO_INET,
                        create,
                        seq,
                    );
                    sys::nftnl_set_nlmsg_build_payload(hdr, s.as_ptr());
                }
                Msg::Elements(s) => {
                    let hdr = sys::nftnl_nlmsg_build_hdr(
                        buf,
                        libc::NFT_MSG_NEWSETELEM as u16,
                        NFPROTO_INET,
                        create,
                        seq,
                    );
                    sys::nftnl_set_elems_nlmsg_build_payload(hdr, s.as_ptr());
                }
                Msg::Rule(r) => {
                    let flags = (libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_ACK) as u16;
                    let hdr = sys::nftnl_nlmsg_build_hdr(
                        buf,
                        libc::NFT_MSG_NEWRULE as u16,
                        NFPROTO_INET,
                        flags,
                        seq,
                    );
                    sys::nftnl_rule_nlmsg_build_payload(hdr, r.as_ptr());
                }
            }
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: each pointer was allocated by the matching nftnl_*_alloc and is freed once.
        unsafe {
            match &self.msg {
                Msg::Table { .. } => {}
                Msg::Chain(c) => sys::nftnl_chain_free(c.as_ptr()),
                Msg::Set(s) | Msg::Elements(s) => sys::nftnl_set_free(s.as_ptr()),
                Msg::Rule(r) => sys::nftnl_rule_free(r.as_ptr()),
            }
        }
    }
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The next address, or `None` past the last of the family.
fn successor(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Set ids name sets within the batch, so rules can refer to sets created in it.
struct Ids {
    next: u32,
    by_name: Vec<(String, u32)>,
}

impl Ids {
    fn id(&mut self, name: &str) -> u32 {
        if let Some((_, id)) = self.by_name.iter().find(|(n, _)| n == name) {
            return *id;
        }
        self.next += 1;
        self.by_name.push((name.to_string(), self.next));
        self.next
    }
}

fn new_set(name: &CString, id: u32, key_type: u32, key_len: u32, flags: u32) -> NonNull<sys::nftnl_set> {
    let table = CString::new(TABLE).expect("constant name");
    // SAFETY: fresh allocation checked for NULL; attribute setters copy their arguments.
    unsafe {
        let s = NonNull::new(sys::nftnl_set_alloc()).expect("libnftnl allocation");
        sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_FAMILY as u16, u32::from(NFPROTO_INET));
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_ID as u16, id);
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_KEY_TYPE as u16, key_type);
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_KEY_LEN as u16, key_len);
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_FLAGS as u16, flags);
        s
    }
}

/// One set element: key, optional interval-end flag, optional jump target.
struct Element {
    key: Vec<u8>,
    interval_end: bool,
    jump: Option<CString>,
}

fn add_element(set: NonNull<sys::nftnl_set>, e: &Element) {
    // SAFETY: fresh element checked for NULL; setters copy; the set takes ownership of it.
    unsafe {
        let el = NonNull::new(sys::nftnl_set_elem_alloc()).expect("libnftnl allocation");
        sys::nftnl_set_elem_set(
            el.as_ptr(),
            sys::NFTNL_SET_ELEM_KEY as u16,
            e.key.as_ptr().cast::<c_void>(),
            e.key.len() as u32,
        );
        if e.interval_end {
            sys::nftnl_set_elem_set_u32(
                el.as_ptr(),
                sys::NFTNL_SET_ELEM_FLAGS as u16,
                libc::NFT_SET_ELEM_INTERVAL_END as u32,
            );
        }
        if let Some(chain) = &e.jump {
            sys::nftnl_set_elem_set_u32(
                el.as_ptr(),
                sys::NFTNL_SET_ELEM_VERDICT as u16,
                libc::NFT_JUMP as u32,
            );
            sys::nftnl_set_elem_set_str(el.as_ptr(), sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
        }
        sys::nftnl_set_elem_add(set.as_ptr(), el.as_ptr());
    }
}

fn elements_of(set: &Set) -> Result<Vec<Element>, NetlinkError> {
    let plain = |key: Vec<u8>| Element {
        key,
        interval_end: false,
        jump: None,
    };
    Ok(match &set.kind {
        SetKind::Addrs(addrs) => addrs.iter().map(|a| plain(addr_bytes(*a))).collect(),
        SetKind::AddrPorts(pairs) => pairs
            .iter()
            .map(|(a, p)| {
                let mut key = addr_bytes(*a);
                key.extend_from_slice(&p.to_be_bytes());
                key.extend_from_slice(&[0, 0]);
                plain(key)
            })
            .collect(),
        SetKind::Ranges(ranges) => {
            // As nft does: an interval end at the family's zero unless a range starts there, then
            // each range as its start and, past its last address, an interval end.
            let zero = match set.family {
                Family::V4 => IpAddr::V4(0.into()),
                Family::V6 => IpAddr::V6(0.into()),
            };
            let mut out = Vec::new();
            if ranges.first().is_none_or(|(lo, _)| *lo != zero) {
                out.push(Element {
                    key: addr_bytes(zero),
                    interval_end: true,
                    jump: None,
                });
            }
            for (lo, hi) in ranges {
                out.push(plain(addr_bytes(*lo)));
                if let Some(end) = successor(*hi) {
                    out.push(Element {
                        key: addr_bytes(end),
                        interval_end: true,
                        jump: None,
                    });
                }
            }
            out
        }
        SetKind::Dispatch(entries) => entries
            .iter()
            .map(|(a, chain)| {
                Ok(Element {
                    key: addr_bytes(*a),
                    interval_end: false,
                    jump: Some(cstring(chain)?),
                })
            })
            .collect::<Result<_, NetlinkError>>()?,
    })
}

fn set_messages(set: &Set, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
    let name = cstring(&set.name)?;
    let id = ids.id(&set.name);
    let (addr_type, addr_len) = match set.family {
        Family::V4 => (TYPE_IPADDR, 4),
        Family::V6 => (TYPE_IP6ADDR, 16),
    };
    let (key_type, key_len, flags, byteorder) = match &set.kind {
        SetKind::Addrs(_) => (addr_type, addr_len, 0, true),
        SetKind::Ranges(_) => (addr_type, addr_len, libc::NFT_SET_INTERVAL as u32, true),
        SetKind::AddrPorts(_) => (
            (addr_type << TYPE_BITS) | TYPE_INET_SERVICE,
            addr_len + 4,
            0,
            false,
        ),
        SetKind::Dispatch(_) => (addr_type, addr_len, libc::NFT_SET_MAP as u32, true),
    };
    let mut udata = Udata::new();
    if byteorder {
        udata.put_u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_BIG_ENDIAN);
    }
    udata.put_str(UDATA_SET_COMMENT, &cstring(&set.comment)?);
    let s = new_set(&name, id, key_type, key_len, flags);
    let (data, len) = udata.bytes();
    // SAFETY: the set is live; the setters copy their arguments.
    unsafe {
        if matches!(set.kind, SetKind::Dispatch(_)) {
            sys::nftnl_set_set_u32(
                s.as_ptr(),
                sys::NFTNL_SET_DATA_TYPE as u16,
                libc::NFT_DATA_VERDICT,
            );
        }
        sys::nftnl_set_set_data(s.as_ptr(), sys::NFTNL_SET_USERDATA as u16, data, len);
    }
    let mut out = vec![Message {
        msg: Msg::Set(s),
        what: format!("set {}", set.name),
    }];
    for chunk in elements_of(set)?.chunks(ELEMENTS_PER_MESSAGE) {
        let holder = new_set(&name, id, key_type, key_len, flags);
        for e in chunk {
            add_element(holder, e);
        }
        out.push(Message {
            msg: Msg::Elements(holder),
            what: format!("elements of set {}", set.name),
        });
    }
    Ok(out)
}

fn chain_message(chain: &Chain) -> Result<Message, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let name = cstring(&chain.name)?;
    let mut udata = Udata::new();
    udata.put_str(sys::NFTNL_UDATA_CHAIN_COMMENT as u8, &cstring(&chain.comment)?);
    let (data, len) = udata.bytes();
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    let c = unsafe {
        let c = NonNull::new(sys::nftnl_chain_alloc()).expect("libnftnl allocation");
        sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
        sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
        sys::nftnl_chain_set_u32(
            c.as_ptr(),
            sys::NFTNL_CHAIN_FAMILY as u16,
            u32::from(NFPROTO_INET),
        );
        if let Some(hook) = chain.hook {
            let hooknum = match hook {
                Hook::Input => libc::NF_INET_LOCAL_IN,
                Hook::Forward => libc::NF_INET_FORWARD,
                Hook::Output => libc::NF_INET_LOCAL_OUT,
            };
            let filter = CString::new("filter").expect("constant");
            sys::nftnl_chain_set_u32(c.as_ptr(), sys::NFTNL_CHAIN_HOOKNUM as u16, hooknum as u32);
            sys::nftnl_chain_set_s32(c.as_ptr(), sys::NFTNL_CHAIN_PRIO as u16, 0);
            sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_TYPE as u16, filter.as_ptr());
            sys::nftnl_chain_set_u32(c.as_ptr(), sys::NFTNL_CHAIN_POLICY as u16, libc::NF_ACCEPT as u32);
        }
        sys::nftnl_chain_set_data(c.as_ptr(), sys::NFTNL_CHAIN_USERDATA as u16, data, len);
        c
    };
    Ok(Message {
        msg: Msg::Chain(c),
        what: format!("chain {}", chain.name),
    })
}

/// Builds the expressions of one rule into a libnftnl rule.
struct RuleBuilder {
    rule: NonNull<sys::nftnl_rule>,
}

impl RuleBuilder {
    fn expr(&mut self, name: &str, attrs: &[(u16, ExprValue)]) {
        let kind = CString::new(name).expect("constant expression name");
        // SAFETY: fresh expression checked for NULL; setters copy; the rule takes ownership.
        unsafe {
            let e = NonNull::new(sys::nftnl_expr_alloc(kind.as_ptr())).expect("libnftnl allocation");
            for (attr, value) in attrs {
                match value {
                    ExprValue::U32(v) => sys::nftnl_expr_set_u32(e.as_ptr(), *attr, *v),
                    ExprValue::Bytes(b) => {
                        sys::nftnl_expr_set(e.as_ptr(), *attr, b.as_ptr().cast::<c_void>(), b.len() as u32);
                    }
                    ExprValue::Str(s) => {
                        sys::nftnl_expr_set_str(e.as_ptr(), *attr, s.as_ptr());
                    }
                }
            }
            sys::nftnl_rule_add_expr(self.rule.as_ptr(), e.as_ptr());
        }
    }

    fn meta(&mut self, key: i32, dreg: i32) {
        self.expr(
            "meta",
            &[
                (attr(sys::NFTNL_EXPR_META_KEY), u(key)),
                (attr(sys::NFTNL_EXPR_META_DREG), u(dreg)),
            ],
        );
    }

    fn cmp(&mut self, op: i32, data: Vec<u8>) {
        self.expr(
            "cmp",
            &[
                (attr(sys::NFTNL_EXPR_CMP_SREG), u(libc::NFT_REG_1)),
                (attr(sys::NFTNL_EXPR_CMP_OP), u(op)),
                (attr(sys::NFTNL_EXPR_CMP_DATA), ExprValue::Bytes(data)),
            ],
        );
    }

    fn payload(&mut self, base: i32, offset: u32, len: u32, dreg: i32) {
        self.expr(
            "payload",
            &[
                (attr(sys::NFTNL_EXPR_PAYLOAD_DREG), u(dreg)),
                (attr(sys::NFTNL_EXPR_PAYLOAD_BASE), u(base)),
                (attr(sys::NFTNL_EXPR_PAYLOAD_OFFSET), ExprValue::U32(offset)),
                (attr(sys::NFTNL_EXPR_PAYLOAD_LEN), ExprValue::U32(len)),
            ],
        );
    }

    fn lookup(&mut self, set: &str, id: u32, dreg: Option<i32>) -> Result<(), NetlinkError> {
        let mut attrs = vec![
            (attr(sys::NFTNL_EXPR_LOOKUP_SREG), u(libc::NFT_REG_1)),
            (attr(sys::NFTNL_EXPR_LOOKUP_SET), ExprValue::Str(cstring(set)?)),
            (attr(sys::NFTNL_EXPR_LOOKUP_SET_ID), ExprValue::U32(id)),
        ];
        if let Some(dreg) = dreg {
            attrs.push((attr(sys::NFTNL_EXPR_LOOKUP_DREG), u(dreg)));
        }
        self.expr("lookup", &attrs);
        Ok(())
    }

    fn nfproto(&mut self, family: Family) {
        self.meta(libc::NFT_META_NFPROTO, libc::NFT_REG_1);
        let proto = match family {
            Family::V4 => libc::NFPROTO_IPV4,
            Family::V6 => libc::NFPROTO_IPV6,
        };
        self.cmp(libc::NFT_CMP_EQ, vec![proto as u8]);
    }

    fn l4proto(&mut self, number: u8) {
        self.meta(libc::NFT_META_L4PROTO, libc::NFT_REG_1);
        self.cmp(libc::NFT_CMP_EQ, vec![number]);
    }

    fn addr(&mut self, family: Family, addr: Addr, dreg: i32) {
        let (offset, len) = match (family, addr) {
            (Family::V4, Addr::Saddr) => (12, 4),
            (Family::V4, Addr::Daddr) => (16, 4),
            (Family::V6, Addr::Saddr) => (8, 16),
            (Family::V6, Addr::Daddr) => (24, 16),
        };
        self.payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg);
    }

    fn verdict(&mut self, code: i32, chain: Option<&str>) -> Result<(), NetlinkError> {
        let mut attrs = vec![
            (attr(sys::NFTNL_EXPR_IMM_DREG), u(libc::NFT_REG_VERDICT)),
            (attr(sys::NFTNL_EXPR_IMM_VERDICT), u(code)),
        ];
        if let Some(chain) = chain {
            attrs.push((attr(sys::NFTNL_EXPR_IMM_CHAIN), ExprValue::Str(cstring(chain)?)));
        }
        self.expr("immediate", &attrs);
        Ok(())
    }
}

enum ExprValue {
    U32(u32),
    Bytes(Vec<u8>),
    Str(CString),
}

fn u(v: i32) -> ExprValue {
    ExprValue::U32(v as u32)
}

fn attr(a: u32) -> u16 {
    a as u16
}

fn ip_proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
        Protocol::Sctp => libc::IPPROTO_SCTP as u8,
    }
}

/// The ICMPv6 types of router and neighbour discovery, as nft's anonymous set holds them.
const ND_TYPES: [u8; 5] = [133, 134, 135, 136, 137];
const ND_SET: &str = "__set%d";

fn rule_message(chain: &str, rule: &Rule, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let chain_c = cstring(chain)?;
    let mut extra = Vec::new();
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    let r = unsafe {
        let r = NonNull::new(sys::nftnl_rule_alloc()).expect("libnftnl allocation");
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain_c.as_ptr());
        sys::nftnl_rule_set_u32(r.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, u32::from(NFPROTO_INET));
        r
    };
    let mut b = RuleBuilder { rule: r };
    for m in &rule.matches {
        match m {
            Match::EstablishedOrRelated => {
                b.expr(
                    "ct",
                    &[
                        (attr(sys::NFTNL_EXPR_CT_KEY), u(libc::NFT_CT_STATE)),
                        (attr(sys::NFTNL_EXPR_CT_DREG), u(libc::NFT_REG_1)),
                    ],
                );
                // Conntrack state bits: established is 1 << 1, related 1 << 2.
                let mask: u32 = (1 << 1) | (1 << 2);
                b.expr(
                    "bitwise",
                    &[
                        (attr(sys::NFTNL_EXPR_BITWISE_SREG), u(libc::NFT_REG_1)),
                        (attr(sys::NFTNL_EXPR_BITWISE_DREG), u(libc::NFT_REG_1)),
                        (attr(sys::NFTNL_EXPR_BITWISE_LEN), ExprValue::U32(4)),
                        (
                            attr(sys::NFTNL_EXPR_BITWISE_MASK),
                            ExprValue::Bytes(mask.to_ne_bytes().to_vec()),
                        ),
                        (attr(sys::NFTNL_EXPR_BITWISE_XOR), ExprValue::Bytes(vec![0; 4])),
                    ],
                );
                b.cmp(libc::NFT_CMP_NEQ, vec![0; 4]);
            }
            Match::NeighbourDiscovery => {
                b.nfproto(Family::V6);
                b.l4proto(libc::IPPROTO_ICMPV6 as u8);
                b.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, libc::NFT_REG_1);
                let name = format!("{ND_SET}-{chain}");
                let id = ids.id(&name);
                let s = new_set(
                    &cstring(ND_SET)?,
                    id,
                    TYPE_ICMP6_TYPE,
                    1,
                    (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32,
                );
                // SAFETY: the set is live; nft sizes anonymous constant sets by their elements.
                unsafe {
                    sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_DESC_SIZE as u16, ND_TYPES.len() as u32)
                };
                let elems = new_set(
                    &cstring(ND_SET)?,
                    id,
                    TYPE_ICMP6_TYPE,
                    1,
                    (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32,
                );
                for t in ND_TYPES {
                    add_element(
                        elems,
                        &Element {
                            key: vec![t],
                            interval_end: false,
                            jump: None,
                        },
                    );
                }
                extra.push(Message {
                    msg: Msg::Set(s),
                    what: format!("neighbour discovery set of chain {chain}"),
                });
                extra.push(Message {
                    msg: Msg::Elements(elems),
                    what: format!("neighbour discovery set of chain {chain}"),
                });
                b.lookup(ND_SET, id, None)?;
            }
            Match::AddrIn { family, addr, set } => {
                b.nfproto(*family);
                b.addr(*family, *addr, libc::NFT_REG_1);
                let id = ids.id(set);
                b.lookup(set, id, None)?;
            }
            Match::Protocol(p) => b.l4proto(ip_proto(*p)),
            Match::PortRange {
                protocol,
                first,
                last,
            } => {
                b.l4proto(ip_proto(*protocol));
                b.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, libc::NFT_REG_1);
                if first == last {
                    b.cmp(libc::NFT_CMP_EQ, first.to_be_bytes().to_vec());
                } else {
                    b.cmp(libc::NFT_CMP_GTE, first.to_be_bytes().to_vec());
                    b.cmp(libc::NFT_CMP_LTE, last.to_be_bytes().to_vec());
                }
            }
            Match::DaddrPortIn {
                family,
                protocol,
                set,
            } => {
                b.nfproto(*family);
                b.l4proto(ip_proto(*protocol));
                let port_reg = match family {
                    Family::V4 => libc::NFT_REG32_01,
                    Family::V6 => libc::NFT_REG32_04,
                };
                b.addr(*family, Addr::Daddr, libc::NFT_REG_1);
                b.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, port_reg);
                let id = ids.id(set);
                b.lookup(set, id, None)?;
            }
        }
    }
    match &rule.verdict {
        Verdict::Accept => b.verdict(libc::NF_ACCEPT, None)?,
        Verdict::Drop => b.verdict(libc::NF_DROP, None)?,
        Verdict::Return => b.verdict(libc::NFT_RETURN, None)?,
        Verdict::Jump(target) => b.verdict(libc::NFT_JUMP, Some(target))?,
        Verdict::Dispatch { family, addr, map } => {
            b.nfproto(*family);
            b.addr(*family, *addr, libc::NFT_REG_1);
            let id = ids.id(map);
            b.lookup(map, id, Some(libc::NFT_REG_VERDICT))?;
        }
    }
    if let Some(comment) = &rule.comment {
        let mut udata = Udata::new();
        udata.put_str(sys::NFTNL_UDATA_RULE_COMMENT as u8, &cstring(comment)?);
        let (data, len) = udata.bytes();
        // SAFETY: the rule is live; the setter copies the bytes.
        unsafe { sys::nftnl_rule_set_data(r.as_ptr(), sys::NFTNL_RULE_USERDATA as u16, data, len) };
    }
    extra.push(Message {
        msg: Msg::Rule(r),
        what: format!("a rule of chain {chain}"),
    });
    Ok(extra)
}

/// The messages that replace the table: create it if missing, delete it, then define it anew,
/// in the order the script uses (sets, allow-set chains, maps, the other chains, then rules).
fn full_messages(table: &Table) -> Result<Vec<Message>, NetlinkError> {
    let mut ids = Ids {
        next: 0,
        by_name: Vec::new(),
    };
    let mut out = vec![
        Message {
            msg: Msg::Table { delete: false },
            what: format!("table inet {TABLE}"),
        },
        Message {
            msg: Msg::Table { delete: true },
            what: format!("deleting table inet {TABLE}"),
        },
        Message {
            msg: Msg::Table { delete: false },
            what: format!("table inet {TABLE}"),
        },
    ];
    for chain in &table.chains {
        out.push(chain_message(chain)?);
    }
    for set in table
        .sets
        .iter()
        .filter(|s| !matches!(s.kind, SetKind::Dispatch(_)))
    {
        out.extend(set_messages(set, &mut ids)?);
    }
    for set in table
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Dispatch(_)))
    {
        out.extend(set_messages(set, &mut ids)?);
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            out.extend(rule_message(&chain.name, rule, &mut ids)?);
        }
    }
    Ok(out)
}

/// Replaces `table inet netfence` with `table` in one transaction.
pub fn apply_full(table: &Table) -> Result<ApplyReport, NetlinkError> {
    let start = Instant::now();
    let messages = full_messages(table)?;
    let mut batch = Batch::new();
    for m in &messages {
        batch.add(m, MsgType::Add);
    }
    let finalized = batch.finalize();
    send(&finalized, &messages)?;
    Ok(ApplyReport {
        n_messages: messages.len(),
        n_elements: table.n_elements(),
        elapsed: start.elapsed(),
    })
}

/// Removes `table inet netfence` (nothing else), if it exists.
pub fn delete_table() -> Result<(), NetlinkError> {
    let messages = vec![
        Message {
            msg: Msg::Table { delete: false },
            what: format!("table inet {TABLE}"),
        },
        Message {
            msg: Msg::Table { delete: true },
            what: format!("deleting table inet {TABLE}"),
        },
    ];
    let mut batch = Batch::new();
    for m in &messages {
        batch.add(m, MsgType::Add);
    }
    send(&batch.finalize(), &messages)
}

fn send(batch: &FinalizedBatch, messages: &[Message]) -> Result<(), NetlinkError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NetlinkError::Socket)?;
    let portid = socket.portid();
    socket.send_all(batch).map_err(NetlinkError::Send)?;
    let mut buffer = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
    let seqs = batch.sequence_numbers();
    let first = seqs.start;
    let mut expected = seqs;
    while !expected.is_empty() {
        let received = socket.recv(&mut buffer[..]).map_err(NetlinkError::Receive)?;
        for message in received {
            let message = message.map_err(NetlinkError::Receive)?;
            // The header's sequence number says which message the kernel answers.
            let seq = message
                .get(8..12)
                .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            if let Err(source) = mnl::cb_run(message, seq, portid) {
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
