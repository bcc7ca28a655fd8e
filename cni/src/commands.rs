//! The commands: ADD, DEL, CHECK, STATUS, GC, each one or a few calls to
//! meshd, whose answers are the API's types.

use crate::api::{self, Client, ClientError};
use crate::config::{requested_ip, Env, NetConf};
use crate::error::{codes, CniError};
use crate::netns::{check_netns, inspect_netns};
use crate::result::{add_result, CniResult};
use std::collections::HashSet;
use std::path::Path;

/// Runs one API call to completion: every call is a short-lived process.
fn block<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<Result<T, ClientError>, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(codes::IO, format!("cannot start the I/O runtime: {e}")))?;
    Ok(rt.block_on(f))
}

fn api_error(e: ClientError, conf: &NetConf, doing: &str) -> CniError {
    crate::error::api_error(e, &conf.socket, doing)
}

/// Whether meshd said the thing (the attachment, the network) does not exist.
fn is_not_found(e: &ClientError) -> bool {
    e.kind().is_some_and(|k| k.is_not_found())
}

fn find_network(conf: &NetConf, client: &Client, doing: &str) -> Result<api::Network, CniError> {
    let nets = block(client.networks())?.map_err(|e| api_error(e, conf, doing))?;
    nets.into_iter()
        .find(|n| n.id == conf.network)
        .ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            format!("{doing}: mesh network {:?} does not exist", conf.network),
        )
        .details(format!(
            "create it with `meshctl network create {} --subnet CIDR`, or set \"network\" in the configuration",
            conf.network
        ))
    })
}

pub fn add(conf: &NetConf, env: &Env) -> Result<CniResult, CniError> {
    let netns = env.netns.as_deref().unwrap_or_default();
    let cid = env.container_id.clone().unwrap_or_default();
    check_netns(netns)?;
    let client = Client::new(&conf.socket);
    let doing = format!("attaching container {cid} to mesh network {}", conf.network);
    let net = find_network(conf, &client, &doing)?;
    let ip = requested_ip(conf, env, Some(&net.subnet))?;
    let name = conf
        .args_name
        .clone()
        .or_else(|| env.arg("MESH_NAME").map(str::to_string))
        .or_else(|| env.arg("K8S_POD_NAME").map(str::to_string))
        .filter(|n| !n.is_empty());
    let version = conf
        .args_version
        .clone()
        .or_else(|| env.arg("MESH_VERSION").map(str::to_string))
        .filter(|n| !n.is_empty());
    let req = api::AttachRequest {
        target: netns.to_string(),
        network: conf.network.clone(),
        ip,
        ifname: env.ifname.clone(),
        container_id: Some(cid),
        name,
        version,
        labels: conf.args_labels.clone(),
        mode: None,
        parent: None,
        origin: api::Origin::Cni(conf.name.clone()),
    };
    let att = block(client.attach(&req))?.map_err(|e| api_error(e, conf, &doing))?;
    Ok(add_result(conf, env, &att, Some(net.mtu)))
}

pub fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let cid = env.container_id.clone().unwrap_or_default();
    let client = Client::new(&conf.socket);
    let doing = format!(
        "detaching container {cid} from mesh network {}",
        conf.network
    );
    let req = api::DetachRequest {
        target: None,
        network: conf.network.clone(),
        container_id: Some(cid),
        origin: None,
    };
    match block(client.detach(&req))? {
        Ok(_) => Ok(()),
        // Already gone (a repeated DEL) or the network was removed: done.
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) if e.is_unreachable_daemon() => {
            // With the namespace gone, the veth died with it, and meshd
            // drops the stale record when it starts: nothing is left.
            let ns_alive = env.netns.as_deref().is_some_and(|p| Path::new(p).exists());
            if ns_alive {
                Err(api_error(e, conf, &doing))
            } else {
                eprintln!("mesh CNI: {doing}: meshd unreachable, namespace gone: nothing to undo");
                Ok(())
            }
        }
        Err(e) => Err(api_error(e, conf, &doing)),
    }
}

pub fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let cid = env.container_id.as_deref().unwrap_or_default();
    let netns = env.netns.as_deref().unwrap_or_default();
    let ifname = env.ifname.as_deref().unwrap_or_default();
    check_netns(netns)?;
    let client = Client::new(&conf.socket);
    let doing = format!("checking container {cid} on mesh network {}", conf.network);
    find_network(conf, &client, &doing)?;
    let atts = block(client.attachments())?.map_err(|e| api_error(e, conf, &doing))?;
    let att = atts
        .iter()
        .find(|a| a.network == conf.network && a.container_id.as_deref() == Some(cid))
        .ok_or_else(|| {
            CniError::new(
                codes::CHECK_FAILED,
                format!("{doing}: the container is not attached"),
            )
        })?;
    let fail = |m: String| CniError::new(codes::CHECK_FAILED, format!("{doing}: {m}"));
    if att.ifname != ifname {
        return Err(fail(format!(
            "attached as {}, not CNI_IFNAME {ifname}",
            att.ifname
        )));
    }
    if let Some(prev) = &conf.prev_result {
        check_prev_result(prev, ifname, att).map_err(fail)?;
    }
    inspect_netns(netns, ifname, &att.ip).map_err(fail)
}

/// The attachment agrees with what the runtime kept from ADD.
fn check_prev_result(prev: &CniResult, ifname: &str, att: &api::Attachment) -> Result<(), String> {
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
        .ok_or_else(|| format!("prevResult has no interface {ifname} in a sandbox"))?;
    if let Some(mac) = &prev.interfaces[idx].mac {
        if !mac.eq_ignore_ascii_case(&att.mac) {
            return Err(format!("MAC is {}, prevResult says {mac}", att.mac));
        }
    }
    let addr = prev.ips.iter().find(|i| i.interface == Some(idx));
    if let Some(addr) = addr.map(|i| &i.address) {
        if *addr != att.ip {
            return Err(format!("address is {}, prevResult says {addr}", att.ip));
        }
    }
    Ok(())
}

pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let client = Client::new(&conf.socket);
    let unavailable = |m: String| CniError::new(codes::NOT_AVAILABLE, m);
    block(client.status())?.map_err(|e| {
        unavailable(format!(
            "meshd is not available: {}",
            api_error(e, conf, "status").msg
        ))
    })?;
    find_network(conf, &client, "status").map_err(|e| unavailable(e.msg))?;
    Ok(())
}

pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let client = Client::new(&conf.socket);
    let doing = format!("garbage-collecting mesh network {}", conf.network);
    // Without the list, every attachment would look stale: refuse rather
    // than detach every container of the network.
    let Some(valid) = conf.valid_attachments.clone() else {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments (the attachments still in use); nothing was detached",
        ));
    };
    let valid: HashSet<(String, Option<String>)> = valid.into_iter().collect();
    let atts = block(client.attachments())?.map_err(|e| api_error(e, conf, &doing))?;
    // The runtime lists only its own containers: everything another runtime
    // (Docker, an OCI hook, meshctl, another CNI configuration) attached,
    // or an older plugin whose attachments carry no origin, is not ours.
    let ours = api::Origin::Cni(conf.name.clone());
    let mut errors = Vec::new();
    for a in atts
        .iter()
        .filter(|a| a.network == conf.network && a.origin == ours)
    {
        let Some(cid) = a.container_id.clone() else {
            continue;
        };
        if valid.contains(&(cid.clone(), Some(a.ifname.clone())))
            || valid.contains(&(cid.clone(), None))
        {
            continue;
        }
        let req = api::DetachRequest {
            target: None,
            network: conf.network.clone(),
            container_id: Some(cid.clone()),
            origin: Some(ours.clone()),
        };
        match block(client.detach(&req))? {
            Ok(_) => eprintln!("mesh CNI: GC detached stale container {cid}"),
            Err(e) if is_not_found(&e) => eprintln!("mesh CNI: GC detached stale container {cid}"),
            Err(e) => errors.push(api_error(e, conf, &format!("{doing}: container {cid}"))),
        }
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};

    fn att() -> api::Attachment {
        crate::result::tests::attachment()
    }

    fn prev(mac: &str, ip: &str) -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "msv0001".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some(mac.into()),
                    sandbox: Some("/run/netns/x".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: ip.into(),
                interface: Some(1),
                ..IpConfig::default()
            }],
            ..CniResult::default()
        }
    }

    #[test]
    fn check_compares_with_the_prev_result() {
        check_prev_result(&prev("02:00:00:00:00:01", "10.0.0.2/24"), "eth0", &att()).unwrap();
        // MACs compare without regard to case.
        let upper = api::Attachment {
            mac: "02:00:00:00:00:AB".into(),
            ..att()
        };
        check_prev_result(&prev("02:00:00:00:00:ab", "10.0.0.2/24"), "eth0", &upper).unwrap();
        let e = check_prev_result(&prev("02:00:00:00:00:09", "10.0.0.2/24"), "eth0", &att())
            .unwrap_err();
        assert!(e.contains("MAC"), "{e}");
        let e = check_prev_result(&prev("02:00:00:00:00:01", "10.0.0.3/24"), "eth0", &att())
            .unwrap_err();
        assert!(e.contains("10.0.0.3/24"), "{e}");
        let e = check_prev_result(&prev("02:00:00:00:00:01", "10.0.0.2/24"), "eth1", &att())
            .unwrap_err();
        assert!(e.contains("eth1"), "{e}");
    }
}
