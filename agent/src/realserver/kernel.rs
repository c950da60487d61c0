//! The thin driver between the pure core and the kernel: reads what
//! [`Observed`] holds, and carries out one [`Action`] at a time.

use std::collections::BTreeMap;

use crate::netif::{
    NetifError, Outcome, Rtnl,
    fou::{FouError, FouSocket, GuePort},
    sysctl::{SysctlError, Sysctls},
    tunnel::TunnelDevice,
};

use super::{
    desired::Desired,
    plan::{Action, Observed, Reconciler, SeenAddress},
};

/// Reading or changing the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request.
    #[error(transparent)]
    Netif(#[from] NetifError),
    /// A sysctl.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// A GUE receive port.
    #[error(transparent)]
    Fou(#[from] FouError),
}

/// Runs one request on a fou socket of its own, off the runtime's thread.
async fn fou<T: Send + 'static>(
    f: impl FnOnce(&mut FouSocket) -> Result<T, FouError> + Send + 'static,
) -> Result<T, FouError> {
    tokio::task::spawn_blocking(move || f(&mut FouSocket::connect()?))
        .await
        .map_err(|e| FouError::Io(std::io::Error::other(e)))?
}

/// The kernel of the agent's network namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    rtnl: Rtnl,
    sysctls: Sysctls,
}

impl Kernel {
    /// Opens a netlink socket (on the current tokio runtime) and uses
    /// `/proc/sys`.
    pub fn connect() -> Result<Self, KernelError> {
        Ok(Kernel {
            rtnl: Rtnl::connect()?,
            sysctls: Sysctls::default(),
        })
    }

    /// The netlink socket.
    pub fn rtnl(&self) -> &Rtnl {
        &self.rtnl
    }

    /// The sysctl tree.
    pub fn sysctls(&self) -> &Sysctls {
        &self.sysctls
    }

    /// Reads links, addresses, default routes, and then the sysctls the
    /// reconciler asks for.
    pub async fn observe(
        &self,
        reconciler: &Reconciler,
        desired: Option<&Desired>,
    ) -> Result<Observed, KernelError> {
        let links = self.rtnl.links().await?;
        let names: BTreeMap<u32, String> =
            links.iter().map(|l| (l.index, l.name.clone())).collect();
        let mut observed = Observed {
            links: links.iter().map(|l| (l.name.clone(), l.up)).collect(),
            ..Default::default()
        };
        for a in self.rtnl.addresses(None).await? {
            if let Some(device) = names.get(&a.index) {
                observed.addresses.push(SeenAddress {
                    device: device.clone(),
                    address: a.address,
                    prefix_len: a.prefix_len,
                    tentative: a.tentative,
                });
            }
        }
        observed.default_gateways = self.rtnl.default_gateways().await?.into_iter().collect();
        let gue_wanted = desired.is_some_and(|d| {
            d.vips
                .iter()
                .any(|v| matches!(v.mode, super::desired::Mode::Gue { .. }))
        });
        if gue_wanted || !reconciler.ledger.created_gue_ports.is_empty() {
            match fou(|s| s.gue_ports()).await {
                Ok(ports) => observed.gue_ports = ports.into_iter().collect(),
                // No fou module: no port is open; the VIP says why.
                Err(FouError::NoFamily) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for key in reconciler.sysctl_keys(desired, &observed) {
            match self.sysctls.read(&key) {
                Ok(v) => {
                    observed.sysctls.insert(key, v);
                }
                // The interface is gone: the core reports it.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(observed)
    }

    /// Carries out one action.
    pub async fn execute(&self, action: &Action) -> Result<Outcome, KernelError> {
        Ok(match action {
            Action::CreateTunnel(device) => self.rtnl.ensure_tunnel(*device).await?,
            Action::AddGuePort(port) => {
                let port: GuePort = *port;
                match fou(move |s| s.add(port)).await? {
                    true => Outcome::Changed,
                    false => Outcome::AlreadyThere,
                }
            }
            Action::DelGuePort(port) => {
                let port: GuePort = *port;
                match fou(move |s| s.delete(port)).await {
                    Ok(true) => Outcome::Changed,
                    // Gone already, with the module or by hand.
                    Ok(false) | Err(FouError::NoFamily) => Outcome::AlreadyThere,
                    Err(e) => return Err(e.into()),
                }
            }
            Action::SetLinkUp(device) => self.rtnl.set_link_up(device, true).await?,
            Action::SetLinkDown(device) => match self.rtnl.set_link_up(device, false).await {
                Err(NetifError::NoSuchLink { .. }) => Outcome::AlreadyThere,
                other => other?,
            },
            Action::SetSysctl { key, value, .. } => {
                self.sysctls.write(key, value)?;
                Outcome::Changed
            }
            Action::RestoreSysctl { key, value } => match self.sysctls.write(key, value) {
                Ok(()) => Outcome::Changed,
                // The interface went away, and its settings with it.
                Err(e) if e.is_not_found() => Outcome::AlreadyThere,
                Err(e) => return Err(e.into()),
            },
            Action::AddAddress {
                device,
                address,
                prefix_len,
            } => {
                let spec = crate::netif::addresses::AddressSpec {
                    address: *address,
                    prefix_len: *prefix_len,
                    label: None,
                    nodad: address.is_ipv6(),
                };
                self.rtnl.add_address(device, &spec).await?
            }
            Action::DelAddress {
                device,
                address,
                prefix_len,
            } => self.rtnl.del_address(device, *address, *prefix_len).await?,
            Action::DeleteTunnel(device) => {
                // Fallback devices are never in the ledger; a device of that
                // name is one this agent created.
                debug_assert!(TunnelDevice::from_name(device).is_some());
                self.rtnl.delete_link(device).await?
            }
        })
    }
}
