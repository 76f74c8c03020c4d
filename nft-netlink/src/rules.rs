//! Rules as libnftnl expressions: the register-level form of each `Match` and `Verdict`.

use std::ffi::{c_void, CString};
use std::ptr::NonNull;

use nftnl_sys::{self as sys, libc};

use crate::error::NetlinkError;
use crate::objects::{
    add_element, addr_bytes, cstring, ip_proto, new_set, Element, Ids, Message, Obj, Udata, NFPROTO_INET,
    TYPE_ICMP6_TYPE, TYPE_INTEGER, UDATA_SET_KEYBYTEORDER,
};
use nft_backend::nft::{Addr, Family, Match, Rule, Verdict};
use nft_backend::TABLE;

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
        self.lookup_with(set, id, dreg, false)
    }

    /// A lookup of register 1 in the set; `invert`: the rule matches when the key is absent.
    fn lookup_with(
        &mut self,
        set: &str,
        id: u32,
        dreg: Option<i32>,
        invert: bool,
    ) -> Result<(), NetlinkError> {
        let mut attrs = vec![
            (attr(sys::NFTNL_EXPR_LOOKUP_SREG), u(libc::NFT_REG_1)),
            (attr(sys::NFTNL_EXPR_LOOKUP_SET), ExprValue::Str(cstring(set)?)),
            (attr(sys::NFTNL_EXPR_LOOKUP_SET_ID), ExprValue::U32(id)),
        ];
        if let Some(dreg) = dreg {
            attrs.push((attr(sys::NFTNL_EXPR_LOOKUP_DREG), u(dreg)));
        }
        if invert {
            attrs.push((attr(sys::NFTNL_EXPR_LOOKUP_FLAGS), u(libc::NFT_LOOKUP_F_INV)));
        }
        self.expr("lookup", &attrs);
        Ok(())
    }

    /// `dreg = (dreg & mask) ^ xor` on 4 bytes of register 1.
    fn bitwise(&mut self, mask: u32, xor: u32) {
        self.expr(
            "bitwise",
            &[
                (attr(sys::NFTNL_EXPR_BITWISE_SREG), u(libc::NFT_REG_1)),
                (attr(sys::NFTNL_EXPR_BITWISE_DREG), u(libc::NFT_REG_1)),
                (attr(sys::NFTNL_EXPR_BITWISE_LEN), ExprValue::U32(4)),
                (
                    attr(sys::NFTNL_EXPR_BITWISE_MASK),
                    ExprValue::Bytes(mask.to_ne_bytes().to_vec()),
                ),
                (
                    attr(sys::NFTNL_EXPR_BITWISE_XOR),
                    ExprValue::Bytes(xor.to_ne_bytes().to_vec()),
                ),
            ],
        );
    }

    /// Loads constant bytes into a register.
    fn immediate(&mut self, dreg: i32, data: Vec<u8>) {
        self.expr(
            "immediate",
            &[
                (attr(sys::NFTNL_EXPR_IMM_DREG), u(dreg)),
                (attr(sys::NFTNL_EXPR_IMM_DATA), ExprValue::Bytes(data)),
            ],
        );
    }

    /// `daddr . l4proto . dport` of the family into registers from 1 on, as a concatenation
    /// lays them out (each field from a 4-byte register boundary).
    fn frontend_key(&mut self, family: Family) {
        let (proto_reg, port_reg) = match family {
            Family::V4 => (libc::NFT_REG32_01, libc::NFT_REG32_02),
            Family::V6 => (libc::NFT_REG32_04, libc::NFT_REG32_05),
        };
        self.addr(family, Addr::Daddr, libc::NFT_REG_1);
        self.meta(libc::NFT_META_L4PROTO, proto_reg);
        self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, port_reg);
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

/// The ICMPv6 types of router and neighbour discovery, as nft's anonymous set holds them.
const ND_TYPES: [u8; 5] = [133, 134, 135, 136, 137];
const ND_SET: &str = "__set%d";
const ANON_MAP: &str = "__map%d";
/// nft's marker of a host-endian key in a set's user data.
const BYTEORDER_HOST_ENDIAN: u32 = 1;

/// The rule's allocation, in `chain` of the table.
fn new_rule(chain: &str) -> Result<NonNull<sys::nftnl_rule>, NetlinkError> {
    let table = CString::new(TABLE).expect("constant name");
    let chain_c = cstring(chain)?;
    // SAFETY: fresh allocation checked for NULL; setters copy their arguments.
    Ok(unsafe {
        let r = NonNull::new(sys::nftnl_rule_alloc()).expect("libnftnl allocation");
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain_c.as_ptr());
        sys::nftnl_rule_set_u32(r.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, u32::from(NFPROTO_INET));
        r
    })
}

/// The messages of one rule: its anonymous sets first (if any), then the rule.
pub(super) fn rule_message(chain: &str, rule: &Rule, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
    let r = new_rule(chain)?;
    let mut b = RuleBuilder { rule: r };
    let mut out = Vec::new();
    for m in &rule.matches {
        out.extend(b.condition(m, chain, ids)?);
    }
    let anonymous = b.outcome(&rule.verdict, ids)?;
    out.extend(anonymous);
    if let Some(comment) = &rule.comment {
        b.comment(comment)?;
    }
    out.push(Message::new(
        libc::NFT_MSG_NEWRULE,
        Obj::Rule(r),
        format!("a rule of chain {chain}"),
    ));
    Ok(out)
}

impl RuleBuilder {
    /// One match; returns the messages of an anonymous set it needs.
    fn condition(&mut self, m: &Match, chain: &str, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
        match m {
            Match::EstablishedOrRelated => self.established_or_related(),
            Match::NeighbourDiscovery => return self.neighbour_discovery(chain, ids),
            Match::AddrIn { family, addr, set } => {
                self.nfproto(*family);
                self.addr(*family, *addr, libc::NFT_REG_1);
                self.lookup(set, ids.id(set), None)?;
            }
            Match::Protocol(p) => self.l4proto(ip_proto(*p)),
            Match::PortRange {
                protocol,
                first,
                last,
            } => {
                self.l4proto(ip_proto(*protocol));
                self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, libc::NFT_REG_1);
                if first == last {
                    self.cmp(libc::NFT_CMP_EQ, first.to_be_bytes().to_vec());
                } else {
                    self.cmp(libc::NFT_CMP_GTE, first.to_be_bytes().to_vec());
                    self.cmp(libc::NFT_CMP_LTE, last.to_be_bytes().to_vec());
                }
            }
            Match::PortIn { protocol, set } => {
                self.l4proto(ip_proto(*protocol));
                self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, libc::NFT_REG_1);
                self.lookup(set, ids.id(set), None)?;
            }
            Match::AddrNotIn { family, addr, set } => {
                self.nfproto(*family);
                self.addr(*family, *addr, libc::NFT_REG_1);
                self.lookup_with(set, ids.id(set), None, true)?;
            }
            Match::AddrIs { family, addr, value } => {
                self.nfproto(*family);
                self.addr(*family, *addr, libc::NFT_REG_1);
                self.cmp(libc::NFT_CMP_EQ, addr_bytes(*value));
            }
            Match::MarkHas(bits) => {
                self.meta(libc::NFT_META_MARK, libc::NFT_REG_1);
                self.bitwise(*bits, 0);
                self.cmp(libc::NFT_CMP_EQ, bits.to_ne_bytes().to_vec());
            }
            Match::DaddrPortIn {
                family,
                protocol,
                set,
            } => {
                self.nfproto(*family);
                self.l4proto(ip_proto(*protocol));
                let port_reg = match family {
                    Family::V4 => libc::NFT_REG32_01,
                    Family::V6 => libc::NFT_REG32_04,
                };
                self.addr(*family, Addr::Daddr, libc::NFT_REG_1);
                self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, port_reg);
                self.lookup(set, ids.id(set), None)?;
            }
        }
        Ok(vec![])
    }

    /// `ct state established,related`.
    fn established_or_related(&mut self) {
        self.expr(
            "ct",
            &[
                (attr(sys::NFTNL_EXPR_CT_KEY), u(libc::NFT_CT_STATE)),
                (attr(sys::NFTNL_EXPR_CT_DREG), u(libc::NFT_REG_1)),
            ],
        );
        // Conntrack state bits: established is 1 << 1, related 1 << 2.
        let mask: u32 = (1 << 1) | (1 << 2);
        self.expr(
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
        self.cmp(libc::NFT_CMP_NEQ, vec![0; 4]);
    }

    /// ICMPv6 router and neighbour discovery types, looked up in an anonymous constant set of
    /// the rule's own (as nft makes it): returns that set's messages.
    fn neighbour_discovery(&mut self, chain: &str, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
        self.nfproto(Family::V6);
        self.l4proto(libc::IPPROTO_ICMPV6 as u8);
        self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, libc::NFT_REG_1);
        let id = ids.id(&format!("{ND_SET}-{chain}"));
        let flags = (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32;
        let s = new_set(&cstring(ND_SET)?, id, TYPE_ICMP6_TYPE, 1, flags);
        // SAFETY: the set is live; nft sizes anonymous constant sets by their elements.
        unsafe { sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_DESC_SIZE as u16, ND_TYPES.len() as u32) };
        let elems = new_set(&cstring(ND_SET)?, id, TYPE_ICMP6_TYPE, 1, flags);
        for t in ND_TYPES {
            add_element(
                elems,
                &Element {
                    key: vec![t],
                    interval_end: false,
                    jump: None,
                    drop: false,
                },
            );
        }
        self.lookup(ND_SET, id, None)?;
        let what = format!("neighbour discovery set of chain {chain}");
        Ok(vec![
            Message::new(libc::NFT_MSG_NEWSET, Obj::Set(s), what.clone()),
            Message::new(libc::NFT_MSG_NEWSETELEM, Obj::Elements(elems), what),
        ])
    }

    /// The verdict, or the verdict-map lookup that yields it, or the action; returns the
    /// messages of an anonymous map it needs.
    fn outcome(&mut self, verdict: &Verdict, ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
        match verdict {
            Verdict::RandomJump(chains) => return self.random_jump(chains, ids),
            Verdict::FrontendDispatch { family, map } => {
                self.nfproto(*family);
                self.frontend_key(*family);
                self.lookup(map, ids.id(map), Some(libc::NFT_REG_VERDICT))?;
            }
            Verdict::NodePortDispatch { map } => {
                self.meta(libc::NFT_META_L4PROTO, libc::NFT_REG_1);
                self.payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, libc::NFT_REG32_01);
                self.lookup(map, ids.id(map), Some(libc::NFT_REG_VERDICT))?;
            }
            Verdict::Mark(bits) => {
                self.meta(libc::NFT_META_MARK, libc::NFT_REG_1);
                self.bitwise(!bits, *bits);
                self.expr(
                    "meta",
                    &[
                        (attr(sys::NFTNL_EXPR_META_KEY), u(libc::NFT_META_MARK)),
                        (attr(sys::NFTNL_EXPR_META_SREG), u(libc::NFT_REG_1)),
                    ],
                );
            }
            Verdict::Dnat { addr, port } => {
                let family = if addr.is_ipv4() {
                    libc::NFPROTO_IPV4
                } else {
                    libc::NFPROTO_IPV6
                };
                self.immediate(libc::NFT_REG_1, addr_bytes(*addr));
                self.immediate(libc::NFT_REG_2, port.to_be_bytes().to_vec());
                self.expr(
                    "nat",
                    &[
                        (attr(sys::NFTNL_EXPR_NAT_TYPE), u(libc::NFT_NAT_DNAT)),
                        (attr(sys::NFTNL_EXPR_NAT_FAMILY), u(family)),
                        (attr(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN), u(libc::NFT_REG_1)),
                        (attr(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN), u(libc::NFT_REG_2)),
                    ],
                );
            }
            Verdict::Masquerade => self.expr("masq", &[]),
            Verdict::RejectTcpReset => self.expr(
                "reject",
                &[
                    (attr(sys::NFTNL_EXPR_REJECT_TYPE), u(libc::NFT_REJECT_TCP_RST)),
                    (attr(sys::NFTNL_EXPR_REJECT_CODE), ExprValue::Bytes(vec![0])),
                ],
            ),
            Verdict::RejectPortUnreachable => self.expr(
                "reject",
                &[
                    (
                        attr(sys::NFTNL_EXPR_REJECT_TYPE),
                        u(libc::NFT_REJECT_ICMPX_UNREACH),
                    ),
                    (
                        attr(sys::NFTNL_EXPR_REJECT_CODE),
                        ExprValue::Bytes(vec![libc::NFT_REJECT_ICMPX_PORT_UNREACH as u8]),
                    ),
                ],
            ),
            _ => self.terminal(verdict, ids)?,
        }
        Ok(vec![])
    }

    /// `numgen random mod N vmap { 0 : jump a, ... }`: the anonymous map is the rule's own.
    fn random_jump(&mut self, chains: &[String], ids: &mut Ids) -> Result<Vec<Message>, NetlinkError> {
        self.expr(
            "numgen",
            &[
                (attr(sys::NFTNL_EXPR_NG_DREG), u(libc::NFT_REG_1)),
                (
                    attr(sys::NFTNL_EXPR_NG_MODULUS),
                    ExprValue::U32(chains.len() as u32),
                ),
                (attr(sys::NFTNL_EXPR_NG_TYPE), u(libc::NFT_NG_RANDOM)),
            ],
        );
        let key = format!("{ANON_MAP}-{}", ids.next + 1);
        let id = ids.id(&key);
        let flags = (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT | libc::NFT_SET_MAP) as u32;
        let make = || -> Result<NonNull<sys::nftnl_set>, NetlinkError> {
            let s = new_set(&cstring(ANON_MAP)?, id, TYPE_INTEGER, 4, flags);
            // numgen writes a host-endian number: nft reads the keys back in that order.
            let mut udata = Udata::new();
            udata.put_u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_HOST_ENDIAN);
            let (data, len) = udata.bytes();
            // SAFETY: the set is live; the setters copy.
            unsafe {
                sys::nftnl_set_set_u32(
                    s.as_ptr(),
                    sys::NFTNL_SET_DATA_TYPE as u16,
                    libc::NFT_DATA_VERDICT,
                );
                sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_DESC_SIZE as u16, chains.len() as u32);
                sys::nftnl_set_set_data(s.as_ptr(), sys::NFTNL_SET_USERDATA as u16, data, len);
            }
            Ok(s)
        };
        let s = make()?;
        let elems = make()?;
        for (i, chain) in chains.iter().enumerate() {
            add_element(
                elems,
                &Element {
                    key: (i as u32).to_ne_bytes().to_vec(),
                    interval_end: false,
                    jump: Some(cstring(chain)?),
                    drop: false,
                },
            );
        }
        self.lookup(ANON_MAP, id, Some(libc::NFT_REG_VERDICT))?;
        let what = "a random pick's map".to_string();
        Ok(vec![
            Message::new(libc::NFT_MSG_NEWSET, Obj::Set(s), what.clone()),
            Message::new(libc::NFT_MSG_NEWSETELEM, Obj::Elements(elems), what),
        ])
    }

    /// A plain verdict, or an address dispatch.
    fn terminal(&mut self, verdict: &Verdict, ids: &mut Ids) -> Result<(), NetlinkError> {
        match verdict {
            Verdict::Accept => self.verdict(libc::NF_ACCEPT, None),
            Verdict::Drop => self.verdict(libc::NF_DROP, None),
            Verdict::Return => self.verdict(libc::NFT_RETURN, None),
            Verdict::Jump(target) => self.verdict(libc::NFT_JUMP, Some(target)),
            Verdict::Dispatch { family, addr, map } => {
                self.nfproto(*family);
                self.addr(*family, *addr, libc::NFT_REG_1);
                self.lookup(map, ids.id(map), Some(libc::NFT_REG_VERDICT))
            }
            _ => Ok(()),
        }
    }

    /// The rule's comment, in its user data as nft writes it.
    fn comment(&mut self, comment: &str) -> Result<(), NetlinkError> {
        let mut udata = Udata::new();
        udata.put_str(sys::NFTNL_UDATA_RULE_COMMENT as u8, &cstring(comment)?);
        let (data, len) = udata.bytes();
        // SAFETY: the rule is live; the setter copies the bytes.
        unsafe { sys::nftnl_rule_set_data(self.rule.as_ptr(), sys::NFTNL_RULE_USERDATA as u16, data, len) };
        Ok(())
    }
}
