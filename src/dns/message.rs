//! DNS messages for egressd's DNS listener (pure), read and written with
//! hickory's proto crate: one question in, one reply out. The listener
//! answers addresses only; everything else it says is a response code.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SOA};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// How long a client may keep a refusal or an empty answer (the SOA
/// minimum of RFC 2308): short, so a policy change shows soon.
pub const NEGATIVE_TTL: u32 = 30;
/// The largest UDP reply without EDNS (RFC 1035 §4.2.1).
const UDP_PLAIN: usize = 512;

/// What a question asks for, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A or AAAA: addresses, answered for a name the policy allows.
    Addresses { v6: bool },
    /// CNAME, HTTPS, SVCB: answered empty (the app then asks for
    /// addresses), so an allowed zone's other records carry nothing.
    Empty,
    /// Any other type (TXT, MX, NULL, ANY, ...): refused.
    Other,
}

/// One question, read from a query.
#[derive(Debug, Clone)]
pub struct Question {
    query: Message,
    /// The name as asked (its case kept, for the reply).
    pub qname: Name,
    pub qtype: RecordType,
    /// The name in lower case, without the final dot.
    pub name: String,
}

/// A query that cannot be answered as a question, and the reply it gets
/// (none when not even its header could be read).
#[derive(Debug)]
pub struct Unreadable {
    pub reply: Option<Vec<u8>>,
    pub why: &'static str,
}

impl Question {
    /// Reads a query: one question of class IN, opcode QUERY.
    pub fn read(buf: &[u8]) -> Result<Question, Unreadable> {
        let query = match Message::from_vec(buf) {
            Ok(m) => m,
            Err(_) => {
                // The header alone says whom to answer FORMERR.
                let reply = (buf.len() >= 2).then(|| {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr))
                });
                return Err(Unreadable {
                    reply,
                    why: "malformed DNS message",
                });
            }
        };
        let m = &query.metadata;
        let refuse = |code, why| {
            let mut r = Message::error_msg(m.id, m.op_code, code);
            r.queries = query.queries.clone();
            Err(Unreadable {
                reply: Some(encode(&r)),
                why,
            })
        };
        if m.message_type != MessageType::Query {
            return Err(Unreadable {
                reply: None,
                why: "a DNS response, not a query",
            });
        }
        if m.op_code != OpCode::Query {
            return refuse(ResponseCode::NotImp, "DNS opcode not supported");
        }
        let [q] = query.queries.as_slice() else {
            return refuse(ResponseCode::FormErr, "not exactly one DNS question");
        };
        if q.query_class() != DNSClass::IN {
            return refuse(ResponseCode::Refused, "DNS class other than IN");
        }
        let qname = q.name().clone();
        let qtype = q.query_type();
        let name = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        Ok(Question {
            query,
            qname,
            qtype,
            name,
        })
    }

    pub fn id(&self) -> u16 {
        self.query.metadata.id
    }

    pub fn ask(&self) -> Ask {
        match self.qtype {
            RecordType::A => Ask::Addresses { v6: false },
            RecordType::AAAA => Ask::Addresses { v6: true },
            RecordType::CNAME | RecordType::HTTPS | RecordType::SVCB => Ask::Empty,
            _ => Ask::Other,
        }
    }

    /// The reply: `code`, with `addrs` (those of the family asked) as
    /// answers for `ttl`. A negative or empty answer carries an SOA, so
    /// the client caches it for [`NEGATIVE_TTL`]. Over UDP, a reply too
    /// large for the client is truncated (TC), and it asks again over TCP.
    pub fn reply(&self, code: ResponseCode, addrs: &[IpAddr], ttl: Duration, udp: bool) -> Vec<u8> {
        let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let mut r = self.response(code);
        for ip in addrs {
            let data = match (ip, self.qtype) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            r.add_answer(Record::from_rdata(self.qname.clone(), ttl, data));
        }
        if r.answers.is_empty() && matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
            r.add_authority(self.soa());
        }
        let bytes = encode(&r);
        let limit = self
            .query
            .edns
            .as_ref()
            .map_or(UDP_PLAIN, |e| usize::from(e.max_payload()).max(UDP_PLAIN));
        if udp && bytes.len() > limit {
            let mut t = self.response(code);
            t.metadata.truncation = true;
            return encode(&t);
        }
        bytes
    }

    fn response(&self, code: ResponseCode) -> Message {
        let mut r = Message::response(self.id(), OpCode::Query);
        r.metadata.recursion_desired = self.query.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.checking_disabled = self.query.metadata.checking_disabled;
        r.metadata.response_code = code;
        r.add_query(Query::query(self.qname.clone(), self.qtype));
        if self.query.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            r.set_edns(e);
        }
        r
    }

    /// An SOA for the name itself, from egressd: the zone's real SOA is
    /// unknown and does not matter to a stub resolver.
    fn soa(&self) -> Record {
        let me = Name::from_ascii("egressd.invalid.").unwrap_or_default();
        let mail = Name::from_ascii("hostmaster.egressd.invalid.").unwrap_or_default();
        let soa = SOA::new(me, mail, 1, 3600, 600, 86400, NEGATIVE_TTL);
        Record::from_rdata(self.qname.clone(), NEGATIVE_TTL, RData::SOA(soa))
    }
}

/// A message's bytes; a message hickory cannot write (it built it) is
/// answered SERVFAIL by its header alone.
fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_else(|_| {
        let mut b = vec![0u8; 12];
        b[..2].copy_from_slice(&m.metadata.id.to_be_bytes());
        b[2] = 0x80;
        b[3] = 0x82;
        b
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A query for `name` of `qtype`, as a stub resolver sends it.
    pub fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn an_address_question_gets_its_family_only() {
        let q = Question::read(&query("WWW.Example.test.", RecordType::AAAA)).unwrap();
        assert_eq!(q.name, "www.example.test");
        assert_eq!(q.ask(), Ask::Addresses { v6: true });
        let addrs: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let r = Message::from_vec(&q.reply(ResponseCode::NoError, &addrs, Duration::from_secs(60), true))
            .unwrap();
        assert_eq!(r.metadata.id, q.id());
        assert!(r.metadata.recursion_available);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            &r.answers[0].data,
            &RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(r.answers[0].ttl, 60);
        assert_eq!(r.answers[0].name.to_ascii(), "WWW.Example.test.");
    }

    #[test]
    fn refusals_and_empty_answers() {
        let q = Question::read(&query("a.test.", RecordType::TXT)).unwrap();
        assert_eq!(q.ask(), Ask::Other);
        let r = Message::from_vec(&q.reply(ResponseCode::Refused, &[], Duration::ZERO, true)).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let q = Question::read(&query("a.test.", RecordType::HTTPS)).unwrap();
        assert_eq!(q.ask(), Ask::Empty);
        let r = Message::from_vec(&q.reply(ResponseCode::NXDomain, &[], Duration::ZERO, true)).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let garbage = Question::read(&[0x12, 0x34, 0xff]).unwrap_err();
        let r = Message::from_vec(&garbage.reply.unwrap()).unwrap();
        assert_eq!(
            (r.metadata.id, r.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
        assert!(Question::read(&[1]).unwrap_err().reply.is_none());
    }

    #[test]
    fn a_reply_too_large_for_udp_is_truncated() {
        let q = Question::read(&query("many.test.", RecordType::A)).unwrap();
        let addrs: Vec<IpAddr> = (0..60u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        let r =
            Message::from_vec(&q.reply(ResponseCode::NoError, &addrs, Duration::from_secs(5), true)).unwrap();
        assert!(r.metadata.truncation && r.answers.is_empty());
        let r = Message::from_vec(&q.reply(ResponseCode::NoError, &addrs, Duration::from_secs(5), false))
            .unwrap();
        assert_eq!(r.answers.len(), 60);
    }
}
