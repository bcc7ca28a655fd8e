//! Guards of the floating-IP channels.

use super::*;

/// The edge's channels (see [`crate::edge`]): a pool only under its own
/// key and by the host it names; a floating IP under its own key, inside a
/// pool known here, written by the host it names as last writer, with its
/// services on distinct public ports. Any member may associate (the
/// operator works from any host).
impl Guards {
    pub fn fip_pools() -> LwwMap<String, FipPool> {
        guard(POOLS_CHANNEL, |key, p: &FipPool, writer, _, _| {
            fip_pool(key, p, writer)
        })
    }

    pub fn fip_bindings(pools: Records<FipPool>) -> LwwMap<String, FipBindingRecord> {
        guard(
            BINDINGS_CHANNEL,
            move |key, b: &FipBindingRecord, writer, _, _| {
                fip_binding(key, b, writer, &records::live(&pools))
            },
        )
    }

    pub fn fips(pools: Records<FipPool>) -> LwwMap<String, FipRecord> {
        guard(FIPS_CHANNEL, move |key, f: &FipRecord, writer, _, _| {
            let known = records::live(&pools);
            fip_record(key, f, writer, &known)
        })
    }
}

pub fn fip_pool(key: &str, p: &FipPool, writer: &PeerId) -> Verdict {
    check(key == pool_key(&p.cidr), || {
        format!("key {key:?} does not match the pool")
    })?;
    check(p.cidr.trunc() == p.cidr, || {
        format!("pool {} has host bits", p.cidr)
    })?;
    check(p.created_by == writer_hex(writer), || {
        format!("pool {key:?} names another host as its creator")
    })
}

pub fn fip_record(
    key: &str,
    f: &FipRecord,
    writer: &PeerId,
    pools: &std::collections::BTreeMap<String, FipPool>,
) -> Verdict {
    check(key == fip_key(f.addr), || {
        format!("key {key:?} does not match the floating IP")
    })?;
    check(f.updated_by == writer_hex(writer), || {
        format!("floating IP {key:?} names another host as its writer")
    })?;
    in_a_pool(f.addr, pools)
}

fn in_a_pool(
    addr: std::net::Ipv4Addr,
    pools: &std::collections::BTreeMap<String, FipPool>,
) -> Verdict {
    check(pools.values().any(|p| p.cidr.contains(&addr)), || {
        format!("floating IP {addr} is in no pool known here")
    })
}

/// An association: under its own key, by the host it names, to a port.
pub fn fip_binding(
    key: &str,
    b: &FipBindingRecord,
    writer: &PeerId,
    pools: &std::collections::BTreeMap<String, FipPool>,
) -> Verdict {
    check(
        key == binding_key(b.addr, &b.binding.network, &b.binding.service),
        || format!("key {key:?} does not match the association"),
    )?;
    check(b.updated_by == writer_hex(writer), || {
        format!("association {key:?} names another host as its writer")
    })?;
    networks::validate_network_id(&b.binding.network).map_err(|e| e.to_string())?;
    check(dns_label(&b.binding.service), || {
        format!("service name {:?} is not a DNS label", b.binding.service)
    })?;
    check(b.binding.public_port != 0, || "public port 0".into())?;
    in_a_pool(b.addr, pools)
}
