//! libnftnl objects for the batch: tables, chains, sets and their elements, with nft's user data.

use std::ffi::{c_void, CString};
use std::net::IpAddr;
use std::os::raw::c_char;
use std::ptr::NonNull;

use nftnl::{MsgType, NlMsg};
use nftnl_sys::{self as sys, libc};

use super::NetlinkError;
use crate::nft::{Chain, Family, Hook, Set, SetKind};
use crate::TABLE;

pub(super) const NFPROTO_INET: u16 = libc::NFPROTO_INET as u16;
/// Elements per NEWSETELEM message: keeps every message far below the netlink size limit.
pub(super) const ELEMENTS_PER_MESSAGE: usize = 256;

// nft's datatype numbers, as it stores them in set key types.
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const TYPE_IP6ADDR: u32 = 8;
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

/// One message of the batch: the object it writes, what it is for errors, and its type.
pub(super) enum Msg {
    Table { delete: bool },
    Chain(NonNull<sys::nftnl_chain>),
    Set(NonNull<sys::nftnl_set>),
    Elements(NonNull<sys::nftnl_set>),
    Rule(NonNull<sys::nftnl_rule>),
}

pub(super) struct Message {
    pub(super) msg: Msg,
    pub(super) what: String,
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

/// One set element: key, optional interval-end flag, optional jump target.
pub(super) struct Element {
    pub(super) key: Vec<u8>,
    pub(super) interval_end: bool,
    pub(super) jump: Option<CString>,
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

pub(super) fn set_messages(set: &Set, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
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
