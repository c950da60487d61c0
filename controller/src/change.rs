//! What a request does to the topology, as a pure function: the current
//! topology and the request in, the new topology out. Validation comes after.

use lb_proto::v1::{ObjectKind, Topology, object, real_server};

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Replace the whole topology.
    Replace(Topology),
    /// Create or replace these objects; keep the others.
    Upsert(Vec<object::Kind>),
    /// Delete objects of one kind by name.
    Delete {
        /// Kind.
        kind: ObjectKind,
        /// Names.
        names: Vec<String>,
    },
    /// Set or clear a real server's drain flag.
    Drain {
        /// Service name.
        service: String,
        /// Node name or "address:port".
        real_server: String,
        /// Drain (true) or undrain (false).
        drain: bool,
    },
}

/// A request that cannot be carried out as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// An object to change does not exist.
    #[error("{kind} '{name}' does not exist")]
    NotFound {
        /// "service", "node", ...
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The request itself is malformed.
    #[error("{0}")]
    Invalid(String),
}

fn kind_word(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Node => "node",
        ObjectKind::DirectorGroup => "director group",
        ObjectKind::Service => "service",
        ObjectKind::Unspecified => "object",
    }
}

/// Applies `edit` to `current`.
pub fn apply(current: &Topology, edit: &Edit) -> Result<Topology, EditError> {
    let mut t = current.clone();
    match edit {
        Edit::Replace(new) => return Ok(new.clone()),
        Edit::Upsert(objects) => {
            for o in objects {
                match o {
                    object::Kind::Node(n) => upsert(&mut t.nodes, n.clone(), |x| &x.name),
                    object::Kind::DirectorGroup(g) => {
                        upsert(&mut t.director_groups, g.clone(), |x| &x.name)
                    }
                    object::Kind::Service(s) => upsert(&mut t.services, s.clone(), |x| &x.name),
                }
            }
        }
        Edit::Delete { kind, names } => {
            if names.is_empty() {
                return Err(EditError::Invalid("no names to delete".to_string()));
            }
            for name in names {
                let removed = match kind {
                    ObjectKind::Node => remove(&mut t.nodes, name, |x| &x.name),
                    ObjectKind::DirectorGroup => remove(&mut t.director_groups, name, |x| &x.name),
                    ObjectKind::Service => remove(&mut t.services, name, |x| &x.name),
                    ObjectKind::Unspecified => {
                        return Err(EditError::Invalid(
                            "the kind of the objects to delete is required".to_string(),
                        ));
                    }
                };
                if !removed {
                    return Err(EditError::NotFound {
                        kind: kind_word(*kind),
                        name: name.clone(),
                    });
                }
            }
        }
        Edit::Drain {
            service,
            real_server,
            drain,
        } => {
            let svc = t
                .services
                .iter_mut()
                .find(|s| &s.name == service)
                .ok_or_else(|| EditError::NotFound {
                    kind: "service",
                    name: service.clone(),
                })?;
            let port = svc.port;
            let rs = svc
                .real_servers
                .iter_mut()
                .find(|rs| match rs.target.as_ref() {
                    Some(real_server::Target::Node(n)) => n == real_server,
                    Some(real_server::Target::Address(a)) => {
                        let p = if rs.port == 0 { port } else { rs.port };
                        real_server == a
                            || *real_server == format!("{a}:{p}")
                            || *real_server == format!("[{a}]:{p}")
                    }
                    None => false,
                })
                .ok_or_else(|| EditError::NotFound {
                    kind: "real server",
                    name: format!("{real_server} of service {service}"),
                })?;
            rs.drain = *drain;
        }
    }
    Ok(t)
}

fn upsert<T>(items: &mut Vec<T>, item: T, name: impl Fn(&T) -> &String) {
    match items.iter().position(|x| name(x) == name(&item)) {
        Some(i) => items[i] = item,
        None => items.push(item),
    }
}

fn remove<T>(items: &mut Vec<T>, wanted: &str, name: impl Fn(&T) -> &String) -> bool {
    let before = items.len();
    items.retain(|x| name(x) != wanted);
    items.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_proto::v1::{Node, NodeRole, RealServer, Service};

    fn topology() -> Topology {
        Topology {
            nodes: vec![Node {
                name: "rs1".into(),
                role: NodeRole::Realserver as i32,
                address: "10.0.0.1".into(),
                ..Default::default()
            }],
            director_groups: vec![],
            services: vec![Service {
                name: "web".into(),
                port: 80,
                real_servers: vec![
                    RealServer {
                        target: Some(real_server::Target::Node("rs1".into())),
                        ..Default::default()
                    },
                    RealServer {
                        target: Some(real_server::Target::Address("10.0.0.9".into())),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn upsert_replaces_by_name_and_adds_new() {
        let mut web = topology().services[0].clone();
        web.port = 8080;
        let api = Service {
            name: "api".into(),
            ..Default::default()
        };
        let t = apply(
            &topology(),
            &Edit::Upsert(vec![object::Kind::Service(web), object::Kind::Service(api)]),
        )
        .unwrap();
        assert_eq!(t.services.len(), 2);
        assert_eq!(t.services[0].port, 8080);
        assert_eq!(t.services[1].name, "api");
        assert_eq!(t.nodes, topology().nodes);
    }

    #[test]
    fn delete_by_name_or_not_found() {
        let t = apply(
            &topology(),
            &Edit::Delete {
                kind: ObjectKind::Service,
                names: vec!["web".into()],
            },
        )
        .unwrap();
        assert!(t.services.is_empty());
        let err = apply(
            &topology(),
            &Edit::Delete {
                kind: ObjectKind::Node,
                names: vec!["rs9".into()],
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "node 'rs9' does not exist");
    }

    #[test]
    fn drain_by_node_or_address_and_port() {
        let t = apply(
            &topology(),
            &Edit::Drain {
                service: "web".into(),
                real_server: "rs1".into(),
                drain: true,
            },
        )
        .unwrap();
        assert!(t.services[0].real_servers[0].drain);
        let t = apply(
            &t,
            &Edit::Drain {
                service: "web".into(),
                real_server: "10.0.0.9:80".into(),
                drain: true,
            },
        )
        .unwrap();
        assert!(t.services[0].real_servers[1].drain);
        let t = apply(
            &t,
            &Edit::Drain {
                service: "web".into(),
                real_server: "rs1".into(),
                drain: false,
            },
        )
        .unwrap();
        assert!(!t.services[0].real_servers[0].drain);
        let err = apply(
            &t,
            &Edit::Drain {
                service: "web".into(),
                real_server: "rs7".into(),
                drain: true,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "real server 'rs7 of service web' does not exist"
        );
    }
}
