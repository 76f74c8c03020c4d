//! libnftnl objects for the batch: tables, chains, sets and their elements, with nft's user data.

use std::ffi::{c_void, CString};
use std::net::IpAddr;
use std::os::raw::c_char;
use std::ptr::NonNull;

use nftnl::{MsgType, NlMsg};
use nftnl_sys::{self as sys, libc};

use crate::error::NetlinkError;
use nft_backend::nft::{Chain, Family, MapTarget, Set, SetKind};
use nft_backend::TABLE;
use policy_compiler::Protocol;

pub(super) const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
/// Elements per NEWSETELEM message: keeps every message far below the netlink size limit.
pub(super) const ELEMENTS_PER_MESSAGE: usize = 512;

// nft's datatype numbers, as it stores them in set key types.
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const TYPE_IP6ADDR: u32 = 8;
pub(super) const TYPE_INTEGER: u32 = 4;
pub(super) const TYPE_INET_PROTO: u32 = 12;
pub(super) const TYPE_INET_SERVICE: u32 = 13;
pub(super) const TYPE_ICMP6_TYPE: u32 = 29;
pub(super) const TYPE_BITS: u32 = 6;
// nft's user data types for sets and its big-endian byte order marker.
pub(super) const UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(super) const UDATA_SET_COMMENT: u8 = 7;
pub(super) const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// The kernel keeps at most this much user data per object.
pub(super) const USERDATA_MAXLEN: u32 = 256;

pub(super) fn cstring(text: &str) -> Result<CString, NetlinkError> {
    CString::new(text).map_err(|_| NetlinkError::Name(text.to_string()))
}

/// User data: a TLV buffer that nft reads back (comments, key byte order).
pub(super) struct Udata(NonNull<sys::nftnl_udata_buf>);

impl Udata {
    pub(super) fn new() -> Udata {
        // SAFETY: allocation of a buffer of the documented maximum; checked for NULL.
        let buf = unsafe { sys::nftnl_udata_buf_alloc(USERDATA_MAXLEN) };
        Udata(NonNull::new(buf).expect("libnftnl allocation"))
    }

    pub(super) fn put_u32(&mut self, kind: u8, value: u32) {
        // SAFETY: the buffer is live; libnftnl bounds-checks the write and returns false when full.
        unsafe { sys::nftnl_udata_put_u32(self.0.as_ptr(), kind, value) };
    }

    pub(super) fn put_str(&mut self, kind: u8, text: &CString) {
        // SAFETY: as above; `text` is NUL-terminated.
        unsafe { sys::nftnl_udata_put_strz(self.0.as_ptr(), kind, text.as_ptr()) };
    }

    pub(super) fn bytes(&self) -> (*const c_void, u32) {
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

/// The libnftnl object a message carries.
pub(super) enum Obj {
    Table,
    Chain(NonNull<sys::nftnl_chain>),
    Set(NonNull<sys::nftnl_set>),
    /// A set holding the elements to add or delete (none: flush the set).
    Elements(NonNull<sys::nftnl_set>),
    /// A rule holding only table and chain: with DELRULE, flushes the chain.
    Rule(NonNull<sys::nftnl_rule>),
}

/// One message of the batch: its type and flags, the object it writes, and what it is, for
/// errors.
pub(super) struct Message {
    pub(super) kind: i32,
    pub(super) flags: i32,
    pub(super) obj: Obj,
    pub(super) what: String,
}

const CREATE: i32 = libc::NLM_F_CREATE | libc::NLM_F_ACK;
const ACK: i32 = libc::NLM_F_ACK;

impl Message {
    pub(super) fn new(kind: i32, obj: Obj, what: String) -> Message {
        let flags = match kind {
            libc::NFT_MSG_NEWRULE => CREATE | libc::NLM_F_APPEND,
            libc::NFT_MSG_NEWTABLE
            | libc::NFT_MSG_NEWCHAIN
            | libc::NFT_MSG_NEWSET
            | libc::NFT_MSG_NEWSETELEM => CREATE,
            _ => ACK,
        };
        Message {
            kind,
            flags,
            obj,
            what,
        }
    }

    pub(super) fn table(delete: bool) -> Message {
        if delete {
            Message::new(
                libc::NFT_MSG_DELTABLE,
                Obj::Table,
                format!("deleting table inet {TABLE}"),
            )
        } else {
            Message::new(libc::NFT_MSG_NEWTABLE, Obj::Table, format!("table inet {TABLE}"))
        }
    }
}

// SAFETY: each message writes its object into the buffer libnftnl hands it (at least
// nft_nlmsg_maxsize bytes), with a header built by nftnl_nlmsg_build_hdr.
unsafe impl NlMsg for Message {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let buf = buf.cast::<c_char>();
        // SAFETY: the caller gives a buffer large enough for one message; the objects are live.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(buf, self.kind as u16, NFPROTO_INET, self.flags as u16, seq);
            match &self.obj {
                Obj::Table => {
                    let t = sys::nftnl_table_alloc();
                    let name = CString::new(TABLE).expect("constant name");
                    sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
                    sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FAMILY as u16, u32::from(NFPROTO_INET));
                    sys::nftnl_table_nlmsg_build_payload(hdr, t);
                    sys::nftnl_table_free(t);
                }
                Obj::Chain(c) => sys::nftnl_chain_nlmsg_build_payload(hdr, c.as_ptr()),
                Obj::Set(s) => sys::nftnl_set_nlmsg_build_payload(hdr, s.as_ptr()),
                Obj::Elements(s) => sys::nftnl_set_elems_nlmsg_build_payload(hdr, s.as_ptr()),
                Obj::Rule(r) => sys::nftnl_rule_nlmsg_build_payload(hdr, r.as_ptr()),
            }
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: each pointer was allocated by the matching nftnl_*_alloc and is freed once.
        unsafe {
            match &self.obj {
                Obj::Table => {}
                Obj::Chain(c) => sys::nftnl_chain_free(c.as_ptr()),
                Obj::Set(s) | Obj::Elements(s) => sys::nftnl_set_free(s.as_ptr()),
                Obj::Rule(r) => sys::nftnl_rule_free(r.as_ptr()),
            }
        }
    }
}

pub(super) fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The next address, or `None` past the last of the family.
pub(super) fn successor(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Set ids name sets within the batch, so rules can refer to sets created in it.
pub(super) struct Ids {
    pub(super) next: u32,
    pub(super) by_name: Vec<(String, u32)>,
}

impl Ids {
    pub(super) fn id(&mut self, name: &str) -> u32 {
        if let Some((_, id)) = self.by_name.iter().find(|(n, _)| n == name) {
            return *id;
        }
        self.next += 1;
        self.by_name.push((name.to_string(), self.next));
        self.next
    }
}

pub(super) fn new_set(
    name: &CString,
    id: u32,
    key_type: u32,
    key_len: u32,
    flags: u32,
) -> NonNull<sys::nftnl_set> {
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

/// One set element: key, optional interval-end flag, optional jump target, or a drop verdict.
pub(super) struct Element {
    pub(super) key: Vec<u8>,
    pub(super) interval_end: bool,
    pub(super) jump: Option<CString>,
    pub(super) drop: bool,
}

pub(super) fn add_element(set: NonNull<sys::nftnl_set>, e: &Element) {
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
        if e.drop {
            sys::nftnl_set_elem_set_u32(
                el.as_ptr(),
                sys::NFTNL_SET_ELEM_VERDICT as u16,
                libc::NF_DROP as u32,
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

pub(super) fn elements_of(set: &Set) -> Result<Vec<Element>, NetlinkError> {
    let plain = |key: Vec<u8>| Element {
        key,
        interval_end: false,
        jump: None,
        drop: false,
    };
    let verdict = |key: Vec<u8>, target: &MapTarget| -> Result<Element, NetlinkError> {
        Ok(Element {
            key,
            interval_end: false,
            jump: target.chain().map(cstring).transpose()?,
            drop: *target == MapTarget::Drop,
        })
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
            let zero = match set.family {
                Family::V4 => IpAddr::V4(0.into()),
                Family::V6 => IpAddr::V6(0.into()),
            };
            interval_elements(
                addr_bytes(zero),
                ranges
                    .iter()
                    .map(|(lo, hi)| (addr_bytes(*lo), successor(*hi).map(addr_bytes))),
            )
        }
        SetKind::Ports(ranges) => interval_elements(
            vec![0, 0],
            ranges.iter().map(|(lo, hi)| {
                let end = hi.checked_add(1).map(|e| e.to_be_bytes().to_vec());
                (lo.to_be_bytes().to_vec(), end)
            }),
        ),
        SetKind::Dispatch(entries) => entries
            .iter()
            .map(|(a, chain)| {
                Ok(Element {
                    key: addr_bytes(*a),
                    interval_end: false,
                    jump: Some(cstring(chain)?),
                    drop: false,
                })
            })
            .collect::<Result<_, NetlinkError>>()?,
        SetKind::Frontends(entries) => entries
            .iter()
            .map(|((a, proto, port), target)| {
                let mut key = addr_bytes(*a);
                key.extend(proto_port_key(*proto, *port));
                verdict(key, target)
            })
            .collect::<Result<_, NetlinkError>>()?,
        SetKind::NodePorts(entries) => entries
            .iter()
            .map(|((proto, port), target)| verdict(proto_port_key(*proto, *port), target))
            .collect::<Result<_, NetlinkError>>()?,
    })
}

/// `inet_proto . inet_service` as a concatenation stores it: each field padded to 4 bytes.
fn proto_port_key(proto: Protocol, port: u16) -> Vec<u8> {
    let [hi, lo] = port.to_be_bytes();
    vec![ip_proto(proto), 0, 0, 0, hi, lo, 0, 0]
}

/// The IP protocol number.
pub(super) fn ip_proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
        Protocol::Sctp => libc::IPPROTO_SCTP as u8,
    }
}

/// An interval set's elements, as nft makes them: an interval end at the key type's zero
/// unless a range starts there, then each range as its start and, past its last key (unless
/// it ends at the type's maximum), an interval end. Keys are big-endian bytes.
fn interval_elements(
    zero: Vec<u8>,
    ranges: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<Element> {
    let end = |key| Element {
        key,
        interval_end: true,
        jump: None,
        drop: false,
    };
    let mut out = Vec::new();
    let mut ranges = ranges.peekable();
    if ranges.peek().is_none_or(|(lo, _)| *lo != zero) {
        out.push(end(zero));
    }
    for (lo, past) in ranges {
        out.push(Element {
            key: lo,
            interval_end: false,
            jump: None,
            drop: false,
        });
        out.extend(past.map(end));
    }
    out
}

/// Key type, key length, flags and whether nft records a big-endian key, for a set.
fn set_shape(set: &Set) -> (u32, u32, u32, bool) {
    let (addr_type, addr_len) = match set.family {
        Family::V4 => (TYPE_IPADDR, 4),
        Family::V6 => (TYPE_IP6ADDR, 16),
    };
    match &set.kind {
        SetKind::Addrs(_) => (addr_type, addr_len, 0, true),
        SetKind::Ranges(_) => (addr_type, addr_len, libc::NFT_SET_INTERVAL as u32, true),
        SetKind::AddrPorts(_) => (
            (addr_type << TYPE_BITS) | TYPE_INET_SERVICE,
            addr_len + 4,
            0,
            false,
        ),
        SetKind::Dispatch(_) => (addr_type, addr_len, libc::NFT_SET_MAP as u32, true),
        SetKind::Ports(_) => (TYPE_INET_SERVICE, 2, libc::NFT_SET_INTERVAL as u32, true),
        SetKind::Frontends(_) => (
            (((addr_type << TYPE_BITS) | TYPE_INET_PROTO) << TYPE_BITS) | TYPE_INET_SERVICE,
            addr_len + 8,
            libc::NFT_SET_MAP as u32,
            false,
        ),
        SetKind::NodePorts(_) => (
            (TYPE_INET_PROTO << TYPE_BITS) | TYPE_INET_SERVICE,
            8,
            libc::NFT_SET_MAP as u32,
            false,
        ),
    }
}

/// NEWSET for a set, then its elements.
pub(super) fn set_messages(set: &Set, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
    let name = cstring(&set.name)?;
    let id = ids.id(&set.name);
    let (key_type, key_len, flags, byteorder) = set_shape(set);
    let mut udata = Udata::new();
    if byteorder {
        udata.put_u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_BIG_ENDIAN);
    }
    udata.put_str(UDATA_SET_COMMENT, &cstring(&set.comment)?);
    let s = new_set(&name, id, key_type, key_len, flags);
    let (data, len) = udata.bytes();
    // SAFETY: the set is live; the setters copy their arguments.
    unsafe {
        if set.is_map() {
            sys::nftnl_set_set_u32(
                s.as_ptr(),
                sys::NFTNL_SET_DATA_TYPE as u16,
                libc::NFT_DATA_VERDICT,
            );
        }
        sys::nftnl_set_set_data(s.as_ptr(), sys::NFTNL_SET_USERDATA as u16, data, len);
        if let Some(size) = set.size {
            sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_DESC_SIZE as u16, size);
        }
    }
    let mut out = vec![Message::new(
        libc::NFT_MSG_NEWSET,
        Obj::Set(s),
        format!("set {}", set.name),
    )];
    out.extend(element_messages(set, ids, libc::NFT_MSG_NEWSETELEM)?);
    Ok(out)
}

/// NEWSETELEM or DELSETELEM messages for the elements `set` holds, a bounded number each.
pub(super) fn element_messages(set: &Set, ids: &mut Ids, kind: i32) -> Result<Vec<Message>, NetlinkError> {
    let name = cstring(&set.name)?;
    let id = ids.id(&set.name);
    let (key_type, key_len, flags, _) = set_shape(set);
    let verb = if kind == libc::NFT_MSG_DELSETELEM {
        "removing elements of"
    } else {
        "elements of"
    };
    let mut out = Vec::new();
    for chunk in elements_of(set)?.chunks(ELEMENTS_PER_MESSAGE) {
        let holder = new_set(&name, id, key_type, key_len, flags);
        for e in chunk {
            add_element(holder, e);
        }
        out.push(Message::new(
            kind,
            Obj::Elements(holder),
            format!("{verb} set {}", set.name),
        ));
    }
    Ok(out)
}

/// DELSETELEM without elements: empties the set.
pub(super) fn flush_set_message(set: &Set, ids: &mut Ids) -> Result<Message, NetlinkError> {
    let (key_type, key_len, flags, _) = set_shape(set);
    let holder = new_set(&cstring(&set.name)?, ids.id(&set.name), key_type, key_len, flags);
    Ok(Message::new(
        libc::NFT_MSG_DELSETELEM,
        Obj::Elements(holder),
        format!("flushing set {}", set.name),
    ))
}

/// DELSET by name.
pub(super) fn delete_set_message(name: &str) -> Result<Message, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let cname = cstring(name)?;
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    let s = unsafe {
        let s = NonNull::new(sys::nftnl_set_alloc()).expect("libnftnl allocation");
        sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_NAME as u16, cname.as_ptr());
        sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_FAMILY as u16, u32::from(NFPROTO_INET));
        s
    };
    Ok(Message::new(
        libc::NFT_MSG_DELSET,
        Obj::Set(s),
        format!("deleting set {name}"),
    ))
}

fn bare_chain(name: &str) -> Result<NonNull<sys::nftnl_chain>, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let cname = cstring(name)?;
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    Ok(unsafe {
        let c = NonNull::new(sys::nftnl_chain_alloc()).expect("libnftnl allocation");
        sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
        sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_NAME as u16, cname.as_ptr());
        sys::nftnl_chain_set_u32(
            c.as_ptr(),
            sys::NFTNL_CHAIN_FAMILY as u16,
            u32::from(NFPROTO_INET),
        );
        c
    })
}

/// DELCHAIN by name (the kernel removes the chain's rules with it).
pub(super) fn delete_chain_message(name: &str) -> Result<Message, NetlinkError> {
    Ok(Message::new(
        libc::NFT_MSG_DELCHAIN,
        Obj::Chain(bare_chain(name)?),
        format!("deleting chain {name}"),
    ))
}

/// DELRULE with only a chain: removes every rule of the chain.
pub(super) fn flush_chain_message(name: &str) -> Result<Message, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let cname = cstring(name)?;
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    let r = unsafe {
        let r = NonNull::new(sys::nftnl_rule_alloc()).expect("libnftnl allocation");
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, cname.as_ptr());
        sys::nftnl_rule_set_u32(r.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, u32::from(NFPROTO_INET));
        r
    };
    Ok(Message::new(
        libc::NFT_MSG_DELRULE,
        Obj::Rule(r),
        format!("flushing chain {name}"),
    ))
}

pub(super) fn chain_message(chain: &Chain) -> Result<Message, NetlinkError> {
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
            let hooknum = match hook.point() {
                "input" => libc::NF_INET_LOCAL_IN,
                "forward" => libc::NF_INET_FORWARD,
                "output" => libc::NF_INET_LOCAL_OUT,
                "prerouting" => libc::NF_INET_PRE_ROUTING,
                _ => libc::NF_INET_POST_ROUTING,
            };
            let kind = CString::new(if hook.is_nat() { "nat" } else { "filter" }).expect("constant");
            sys::nftnl_chain_set_u32(c.as_ptr(), sys::NFTNL_CHAIN_HOOKNUM as u16, hooknum as u32);
            sys::nftnl_chain_set_s32(c.as_ptr(), sys::NFTNL_CHAIN_PRIO as u16, hook.priority());
            sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_TYPE as u16, kind.as_ptr());
            sys::nftnl_chain_set_u32(c.as_ptr(), sys::NFTNL_CHAIN_POLICY as u16, libc::NF_ACCEPT as u32);
        }
        sys::nftnl_chain_set_data(c.as_ptr(), sys::NFTNL_CHAIN_USERDATA as u16, data, len);
        c
    };
    Ok(Message::new(
        libc::NFT_MSG_NEWCHAIN,
        Obj::Chain(c),
        format!("chain {}", chain.name),
    ))
}
