//! Reading `table inet netfence` back from the kernel (netlink dumps), to check that what was
//! applied is what was intended, and to learn what an earlier run left in place.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_void, CStr, CString};
use std::os::raw::c_char;

use nftnl_sys::{self as sys, libc};

use crate::error::NetlinkError;
use crate::objects::{cstring, elements_of, NFPROTO_INET, UDATA_SET_COMMENT};
use nft_backend::nft::Table;
use nft_backend::TABLE;

/// One set element as the kernel stores it: key bytes, flags, and the chain a map jumps to.
pub type ElementListing = (Vec<u8>, u32, Option<String>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainListing {
    pub comment: Option<String>,
    /// The comment of each rule, in order (`None` for rules without one).
    pub rules: Vec<Option<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetListing {
    pub comment: Option<String>,
    /// The declared size (`None` when none was declared).
    pub size: Option<u32>,
    pub elements: BTreeSet<ElementListing>,
}

/// The named sets and the chains of the table (anonymous sets are the kernel's to name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub chains: BTreeMap<String, ChainListing>,
    pub sets: BTreeMap<String, SetListing>,
}

impl Listing {
    /// What turning `from` into this listing changes, one line per set or chain: what
    /// `netfence apply` reports it changed, and (from the intended table to what the kernel
    /// holds) what a failed read-back found.
    pub fn changes_from(&self, from: &Listing) -> Vec<String> {
        let mut out = Vec::new();
        changes(
            &mut out,
            "set",
            &from.sets,
            &self.sets,
            |s| format!("{} elements", s.elements.len()),
            |old, new| {
                let added = new.elements.difference(&old.elements).count();
                let removed = old.elements.difference(&new.elements).count();
                let mut line = format!("{added} elements added, {removed} removed");
                if old.size != new.size {
                    let text = |size: Option<u32>| size.map_or_else(|| "none".to_string(), |n| n.to_string());
                    line.push_str(&format!("; size {}, was {}", text(new.size), text(old.size)));
                }
                line
            },
        );
        changes(
            &mut out,
            "chain",
            &from.chains,
            &self.chains,
            |c| format!("{} rules", c.rules.len()),
            |old, new| match (old.rules.len(), new.rules.len()) {
                (was, now) if was != now => format!("{now} rules, was {was}"),
                (_, now) => format!("its {now} rules or comment changed"),
            },
        );
        out
    }
}

/// Lines for the objects of one kind: added (with `size`), changed (`change(old, new)`),
/// removed.
fn changes<T: PartialEq>(
    out: &mut Vec<String>,
    kind: &str,
    from: &BTreeMap<String, T>,
    to: &BTreeMap<String, T>,
    size: impl Fn(&T) -> String,
    change: impl Fn(&T, &T) -> String,
) {
    for (name, new) in to {
        match from.get(name) {
            None => out.push(format!("{kind} {name} added ({})", size(new))),
            Some(old) if old != new => out.push(format!("{kind} {name}: {}", change(old, new))),
            Some(_) => {}
        }
    }
    out.extend(
        from.keys()
            .filter(|n| !to.contains_key(*n))
            .map(|n| format!("{kind} {n} removed")),
    );
}

/// The listing the kernel should hold after `table` was applied.
pub fn expected(table: &Table) -> Result<Listing, NetlinkError> {
    let mut listing = Listing::default();
    for chain in &table.chains {
        listing.chains.insert(
            chain.name.clone(),
            ChainListing {
                comment: Some(chain.comment.clone()),
                rules: chain.rules.iter().map(|r| r.comment.clone()).collect(),
            },
        );
    }
    for set in &table.sets {
        let elements = elements_of(set)?
            .into_iter()
            .map(|e| {
                let flags = if e.interval_end {
                    libc::NFT_SET_ELEM_INTERVAL_END as u32
                } else {
                    0
                };
                (e.key, flags, e.jump.map(|c| c.to_string_lossy().into_owned()))
            })
            .collect();
        listing.sets.insert(
            set.name.clone(),
            SetListing {
                comment: Some(set.comment.clone()),
                size: set.size,
                elements,
            },
        );
    }
    Ok(listing)
}

/// The value of a string TLV of nft's user data.
fn udata_str(data: &[u8], kind: u8) -> Option<String> {
    let mut rest = data;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if t == kind {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// # Safety
/// `ptr` is NULL or a NUL-terminated string that outlives the call.
unsafe fn owned_str(ptr: *const c_char) -> Option<String> {
    // SAFETY: per the function's contract.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
}

/// # Safety
/// `ptr` is NULL or points at `len` readable bytes.
unsafe fn owned_bytes(ptr: *const c_void, len: u32) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: per the function's contract.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) }.to_vec()
}

/// What each dump collects.
enum Dump {
    Chains(Vec<(String, Option<String>)>),
    /// Name, comment and declared size of each set.
    Sets(Vec<(String, Option<String>, Option<u32>)>),
    Rules(Vec<(String, Option<String>)>),
    Elements(BTreeSet<ElementListing>),
}

fn on_message(nlh: &libc::nlmsghdr, dump: &mut Dump) -> libc::c_int {
    let nlh: *const libc::nlmsghdr = nlh;
    // SAFETY: libmnl hands each message of the reply, valid for the call; every object is
    // allocated, parsed into, read and freed within this block.
    unsafe {
        match dump {
            Dump::Chains(out) => {
                let c = sys::nftnl_chain_alloc();
                if sys::nftnl_chain_nlmsg_parse(nlh, c) >= 0 {
                    let table = owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TABLE as u16));
                    let name = owned_str(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16))
                        .unwrap_or_default();
                    let mut len = 0u32;
                    let data = sys::nftnl_chain_get_data(c, sys::NFTNL_CHAIN_USERDATA as u16, &mut len);
                    let comment = udata_str(&owned_bytes(data, len), sys::NFTNL_UDATA_CHAIN_COMMENT as u8);
                    if table.as_deref() == Some(TABLE) {
                        out.push((name, comment));
                    }
                }
                sys::nftnl_chain_free(c);
            }
            Dump::Sets(out) => {
                let s = sys::nftnl_set_alloc();
                if sys::nftnl_set_nlmsg_parse(nlh, s) >= 0 {
                    let table = owned_str(sys::nftnl_set_get_str(s, sys::NFTNL_SET_TABLE as u16));
                    let name =
                        owned_str(sys::nftnl_set_get_str(s, sys::NFTNL_SET_NAME as u16)).unwrap_or_default();
                    let mut len = 0u32;
                    let data = sys::nftnl_set_get_data(s, sys::NFTNL_SET_USERDATA as u16, &mut len);
                    let size = if sys::nftnl_set_is_set(s, sys::NFTNL_SET_DESC_SIZE as u16) {
                        Some(sys::nftnl_set_get_u32(s, sys::NFTNL_SET_DESC_SIZE as u16))
                    } else {
                        None
                    };
                    if table.as_deref() == Some(TABLE) {
                        out.push((name, udata_str(&owned_bytes(data, len), UDATA_SET_COMMENT), size));
                    }
                }
                sys::nftnl_set_free(s);
            }
            Dump::Rules(out) => {
                let r = sys::nftnl_rule_alloc();
                if sys::nftnl_rule_nlmsg_parse(nlh, r) >= 0 {
                    let table = owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_TABLE as u16));
                    let chain = owned_str(sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_CHAIN as u16))
                        .unwrap_or_default();
                    let mut len = 0u32;
                    let data = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut len);
                    if table.as_deref() == Some(TABLE) {
                        out.push((
                            chain,
                            udata_str(&owned_bytes(data, len), sys::NFTNL_UDATA_RULE_COMMENT as u8),
                        ));
                    }
                }
                sys::nftnl_rule_free(r);
            }
            Dump::Elements(out) => {
                let s = sys::nftnl_set_alloc();
                if sys::nftnl_set_elems_nlmsg_parse(nlh, s) >= 0 {
                    let iter = sys::nftnl_set_elems_iter_create(s);
                    let mut e = sys::nftnl_set_elems_iter_next(iter);
                    while !e.is_null() {
                        let mut len = 0u32;
                        let key = owned_bytes(
                            sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len),
                            len,
                        );
                        let flags = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                            sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                        } else {
                            0
                        };
                        let chain = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_CHAIN as u16) {
                            owned_str(sys::nftnl_set_elem_get_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16))
                        } else {
                            None
                        };
                        out.insert((key, flags, chain));
                        e = sys::nftnl_set_elems_iter_next(iter);
                    }
                    sys::nftnl_set_elems_iter_destroy(iter);
                }
                sys::nftnl_set_free(s);
            }
        }
    }
    mnl::mnl_sys::MNL_CB_OK
}

/// Sends one dump request and collects the replies. `Ok(false)` when the table does not exist.
fn dump(socket: &mnl::Socket, kind: i32, set: Option<&str>, out: &mut Dump) -> Result<bool, NetlinkError> {
    let portid = socket.portid();
    let table = CString::new(TABLE).expect("constant name");
    // An aligned buffer, as libmnl requires for the headers it reads.
    let mut words = vec![0u64; nftnl::nft_nlmsg_maxsize() as usize / 8];
    let len = words.len() * 8;
    // SAFETY: a u64 buffer viewed as bytes: same memory, stricter alignment, exclusive borrow.
    let buf = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
    let seq = 1;
    // SAFETY: the request is built into `buf`, large enough for one message; objects are freed
    // after their payload is written.
    let request_len = unsafe {
        let flags = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
        let hdr = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            kind as u16,
            NFPROTO_INET,
            flags,
            seq,
        );
        match set {
            Some(name) => {
                let s = sys::nftnl_set_alloc();
                let name = cstring(name)?;
                sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
                sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
                sys::nftnl_set_elems_nlmsg_build_payload(hdr, s);
                sys::nftnl_set_free(s);
            }
            None => {
                // NFTA_CHAIN_TABLE, NFTA_SET_TABLE and NFTA_RULE_TABLE share attribute number
                // 1: a chain holding only the table name asks every dump for our table. Older
                // kernels ignore it for some dumps, so replies are filtered by table as well.
                let c = sys::nftnl_chain_alloc();
                sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
                sys::nftnl_chain_nlmsg_build_payload(hdr, c);
                sys::nftnl_chain_free(c);
            }
        }
        (*hdr).nlmsg_len as usize
    };
    socket.send(&buf[..request_len]).map_err(NetlinkError::Send)?;
    loop {
        let n = socket.recv_raw(buf).map_err(NetlinkError::Receive)?;
        match mnl::cb_run2(&buf[..n], seq, portid, on_message, out) {
            Ok(mnl::CbResult::Stop) => return Ok(true),
            Ok(mnl::CbResult::Ok) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(NetlinkError::Permission),
            Err(e) => return Err(NetlinkError::Receive(e)),
        }
    }
}

/// What the kernel holds of `table inet netfence`; `None` when there is no such table.
pub(super) fn read(socket: &mnl::Socket) -> Result<Option<Listing>, NetlinkError> {
    let mut chains = Dump::Chains(Vec::new());
    if !dump(socket, libc::NFT_MSG_GETCHAIN, None, &mut chains)? {
        return Ok(None);
    }
    // Our table always has its base chains; a dump without any means there is no table.
    if matches!(&chains, Dump::Chains(list) if list.is_empty()) {
        return Ok(None);
    }
    let mut listing = Listing::default();
    if let Dump::Chains(list) = chains {
        for (name, comment) in list {
            listing.chains.insert(
                name,
                ChainListing {
                    comment,
                    rules: Vec::new(),
                },
            );
        }
    }
    let mut rules = Dump::Rules(Vec::new());
    dump(socket, libc::NFT_MSG_GETRULE, None, &mut rules)?;
    if let Dump::Rules(list) = rules {
        for (chain, comment) in list {
            listing.chains.entry(chain).or_default().rules.push(comment);
        }
    }
    let mut sets = Dump::Sets(Vec::new());
    dump(socket, libc::NFT_MSG_GETSET, None, &mut sets)?;
    if let Dump::Sets(list) = sets {
        for (name, comment, size) in list
            .into_iter()
            .filter(|(n, ..)| !n.starts_with("__set") && !n.starts_with("__map"))
        {
            let mut elements = Dump::Elements(BTreeSet::new());
            dump(socket, libc::NFT_MSG_GETSETELEM, Some(&name), &mut elements)?;
            if let Dump::Elements(elements) = elements {
                listing.sets.insert(
                    name,
                    SetListing {
                        comment,
                        size,
                        elements,
                    },
                );
            }
        }
    }
    Ok(Some(listing))
}

#[cfg(test)]
mod tests {
    use super::{ChainListing, Listing, SetListing};

    fn set(size: Option<u32>, keys: &[u8]) -> SetListing {
        SetListing {
            comment: None,
            size,
            elements: keys.iter().map(|k| (vec![*k], 0, None)).collect(),
        }
    }

    fn chain(n_rules: usize, comment: &str) -> ChainListing {
        ChainListing {
            comment: Some(comment.to_string()),
            rules: vec![None; n_rules],
        }
    }

    #[test]
    fn changes_name_each_object_added_changed_or_removed() {
        let from = Listing {
            sets: [
                ("grown", set(Some(64), &[1, 2])),
                ("resized", set(Some(128), &[1])),
                ("same", set(Some(64), &[1])),
                ("gone", set(None, &[])),
            ]
            .map(|(n, s)| (n.to_string(), s))
            .into(),
            chains: [
                ("longer", chain(1, "c")),
                ("recommented", chain(2, "a")),
                ("old", chain(3, "c")),
            ]
            .map(|(n, c)| (n.to_string(), c))
            .into(),
        };
        let to = Listing {
            sets: [
                ("grown", set(Some(64), &[2, 3, 4])),
                ("resized", set(Some(64), &[1])),
                ("same", set(Some(64), &[1])),
                ("new", set(Some(64), &[1, 2])),
            ]
            .map(|(n, s)| (n.to_string(), s))
            .into(),
            chains: [
                ("longer", chain(2, "c")),
                ("recommented", chain(2, "b")),
                ("fresh", chain(1, "c")),
            ]
            .map(|(n, c)| (n.to_string(), c))
            .into(),
        };
        assert_eq!(
            to.changes_from(&from),
            [
                "set grown: 2 elements added, 1 removed",
                "set new added (2 elements)",
                "set resized: 0 elements added, 0 removed; size 64, was 128",
                "set gone removed",
                "chain fresh added (1 rules)",
                "chain longer: 2 rules, was 1",
                "chain recommented: its 2 rules or comment changed",
                "chain old removed",
            ]
        );
        assert!(to.changes_from(&to).is_empty());
    }
}
